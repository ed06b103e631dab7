//! Every `--lr-scheduler` against HF's (`transformers.get_scheduler`), on the
//! learning rates of `tests/fixtures/make_schedules.py`: several warmup and
//! total step counts, each step from 0 to two past the last.

use zhbert_testkit::fixtures;
use zhbert_train::LrScheduler;

#[test]
fn schedulers_give_hfs_learning_rates() {
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("schedules/expected.json")).unwrap(),
    )
    .unwrap();
    let peak = expected["peak"].as_f64().unwrap();
    let cases = expected["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 16);
    for case in cases {
        let name = case["scheduler"].as_str().unwrap();
        let scheduler: LrScheduler = name.parse().unwrap();
        assert_eq!(scheduler.to_string(), name);
        let warmup = case["warmup"].as_u64().unwrap() as usize;
        let total = case["total"].as_u64().unwrap() as usize;
        let lrs: Vec<f64> = serde_json::from_value(case["lr"].clone()).unwrap();
        assert_eq!(lrs.len(), total + 2);
        for (step, &want) in lrs.iter().enumerate() {
            let got = scheduler.lr(peak, step, warmup, total);
            assert!(
                (got - want).abs() <= 1e-12 * peak,
                "{name} warmup {warmup} total {total} step {step}: {got} against HF's {want}"
            );
        }
    }
    assert!("cosine_with_restarts".parse::<LrScheduler>().is_err());
}
