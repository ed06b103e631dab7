//! SVG plots of a run: training loss, dev metrics over steps, confusion matrix.

use std::path::Path;

use anyhow::Result;
use plotters::prelude::*;

use crate::metrics::EvalMetrics;

/// Reads `metrics.jsonl` and writes `loss.svg`, `metrics.svg` and `confusion.svg`
/// (of `final_eval`: the split's name and its metrics).
pub fn write_plots(
    out: &Path,
    labels: &[String],
    final_eval: Option<(&str, &EvalMetrics)>,
) -> Result<()> {
    let text = std::fs::read_to_string(out.join("metrics.jsonl"))?;
    let mut loss = Vec::new();
    let mut dev_loss = Vec::new();
    let mut acc = Vec::new();
    let mut f1 = Vec::new();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let step = v["step"].as_f64().unwrap_or(0.0);
        if let Some(l) = v["loss"].as_f64() {
            loss.push((step, l));
        }
        if let Some(e) = v.get("eval") {
            dev_loss.push((step, e["loss"].as_f64().unwrap_or(f64::NAN)));
            // Regression evaluations have neither.
            if let (Some(a), Some(f)) = (e["accuracy"].as_f64(), e["macro_f1"].as_f64()) {
                acc.push((step, a));
                f1.push((step, f));
            }
        }
    }
    line_chart(
        &out.join("loss.svg"),
        "loss",
        &[("train loss", &loss, BLUE), ("dev loss", &dev_loss, RED)],
    )?;
    if !acc.is_empty() {
        line_chart(
            &out.join("metrics.svg"),
            "dev metrics",
            &[("accuracy", &acc, BLUE), ("macro F1", &f1, GREEN)],
        )?;
    }
    // Multi-label and regression evaluations have no confusion matrix.
    if let Some((split, m)) = final_eval.filter(|(_, m)| !m.confusion.is_empty()) {
        confusion(&out.join("confusion.svg"), split, labels, &m.confusion)?;
    }
    Ok(())
}

fn line_chart(
    path: &Path,
    title: &str,
    series: &[(&str, &Vec<(f64, f64)>, RGBColor)],
) -> Result<()> {
    let points = series
        .iter()
        .flat_map(|(_, s, _)| s.iter())
        .filter(|p| p.1.is_finite());
    let (mut x1, mut y0, mut y1) = (1.0f64, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in points {
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if !y0.is_finite() {
        return Ok(());
    }
    let pad = ((y1 - y0) * 0.05).max(1e-3);
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..x1, (y0 - pad)..(y1 + pad))?;
    chart.configure_mesh().x_desc("step").draw()?;
    for (name, s, color) in series {
        if s.is_empty() {
            continue;
        }
        let color = *color;
        chart
            .draw_series(LineSeries::new(s.iter().copied(), color.stroke_width(2)))?
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

fn confusion(path: &Path, split: &str, labels: &[String], matrix: &[Vec<usize>]) -> Result<()> {
    let k = labels.len().max(1);
    let cell = 90i32;
    let (left, top) = (140i32, 60i32);
    let size = (
        (left + cell * k as i32 + 20) as u32,
        (top + cell * k as i32 + 40) as u32,
    );
    let root = SVGBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE)?;
    let max = matrix.iter().flatten().copied().max().unwrap_or(1).max(1) as f64;
    let style = ("sans-serif", 16).into_font();
    root.draw(&Text::new(
        format!("confusion matrix on {split} (rows: true, columns: predicted)"),
        (10, 15),
        style.clone(),
    ))?;
    for (i, row) in matrix.iter().enumerate() {
        root.draw(&Text::new(
            labels[i].clone(),
            (10, top + cell * i as i32 + cell / 2),
            style.clone(),
        ))?;
        root.draw(&Text::new(
            labels[i].clone(),
            (left + cell * i as i32 + 8, top - 18),
            style.clone(),
        ))?;
        for (j, &v) in row.iter().enumerate() {
            let shade = 1.0 - 0.8 * (v as f64 / max);
            let c = RGBColor((255.0 * shade) as u8, (255.0 * shade) as u8, 255);
            let (x, y) = (left + cell * j as i32, top + cell * i as i32);
            root.draw(&Rectangle::new([(x, y), (x + cell, y + cell)], c.filled()))?;
            root.draw(&Rectangle::new(
                [(x, y), (x + cell, y + cell)],
                BLACK.stroke_width(1),
            ))?;
            root.draw(&Text::new(
                v.to_string(),
                (x + cell / 3, y + cell / 2),
                style.clone(),
            ))?;
        }
    }
    root.present()?;
    Ok(())
}
