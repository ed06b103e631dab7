//! The wire format of text-embeddings-inference (TEI)'s `/predict`: requests,
//! responses and errors, so that TEI's clients work unchanged.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One input: a text, or a text pair (`[CLS] a [SEP] b [SEP]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sequence {
    /// One text.
    Single(String),
    /// A text pair.
    Pair(String, String),
}

/// `inputs` as TEI reads it: `"text"` or `["a", "b"]` (a pair) is one input,
/// answered with one list; `[["a"], ["b", "c"], ...]` is a batch, answered
/// with one list per input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PredictInputs {
    /// One input: the answer is one list of `{score, label}`.
    Single(Sequence),
    /// Several inputs: the answer is one list per input, in order.
    Batch(Vec<Sequence>),
}

impl PredictInputs {
    /// The inputs as a list, in order.
    pub fn into_vec(self) -> Vec<Sequence> {
        match self {
            Self::Single(s) => vec![s],
            Self::Batch(v) => v,
        }
    }
}

/// A `/predict` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PredictRequest {
    /// What to classify.
    pub inputs: PredictInputs,
    /// Cut inputs longer than the max length instead of refusing them
    /// (`None`: the server's `--auto-truncate`, off by default as in TEI).
    pub truncate: Option<bool>,
    /// Logits instead of probabilities.
    pub raw_scores: bool,
    /// Which end of a too long text is cut (with `truncate`). Default right.
    pub truncation_direction: TruncationDirection,
}

/// TEI's `truncation_direction`: `"Right"` cuts a too long text's end (the
/// default, `transformers`' truncation), `"Left"` its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TruncationDirection {
    /// Keep the end of the text.
    Left,
    /// Keep the start of the text.
    #[default]
    Right,
}

/// The body as serde sees it; `inputs` is interpreted by hand so that each
/// wrong shape gets a message that says what is expected.
#[derive(Deserialize)]
struct RawRequest {
    inputs: Value,
    #[serde(default)]
    truncate: Option<bool>,
    #[serde(default)]
    raw_scores: bool,
    #[serde(default)]
    truncation_direction: Option<String>,
}

const EXPECTED: &str =
    "expected a string, a pair of strings [string, string] or a batch [[string], [string, string], ...]";

impl PredictRequest {
    /// Parses a JSON body; a body that is not such a request is a 422.
    pub fn from_json(body: &[u8]) -> Result<Self, ApiError> {
        let raw: RawRequest = serde_json::from_slice(body)
            .map_err(|e| ApiError::validation(format!("invalid JSON request: {e}")))?;
        let truncation_direction = match raw.truncation_direction.as_deref() {
            None | Some("Right" | "right") => TruncationDirection::Right,
            Some("Left" | "left") => TruncationDirection::Left,
            Some(other) => {
                return Err(ApiError::validation(format!(
                    "truncation_direction {other:?}: \"Left\" or \"Right\""
                )))
            }
        };
        Ok(Self {
            inputs: parse_inputs(raw.inputs)?,
            truncate: raw.truncate,
            raw_scores: raw.raw_scores,
            truncation_direction,
        })
    }
}

fn parse_inputs(inputs: Value) -> Result<PredictInputs, ApiError> {
    match inputs {
        Value::String(s) => Ok(PredictInputs::Single(Sequence::Single(s))),
        Value::Array(items) => match items.first() {
            None => Err(ApiError::validation("`inputs` cannot be empty".into())),
            Some(Value::String(_)) => Ok(PredictInputs::Single(sequence(items, None)?)),
            Some(Value::Array(_)) => items
                .into_iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Value::Array(parts) => sequence(parts, Some(i)),
                    other => Err(wrong(&other, Some(i))),
                })
                .collect::<Result<_, _>>()
                .map(PredictInputs::Batch),
            Some(other) => Err(wrong(other, None)),
        },
        other => Err(wrong(&other, None)),
    }
}

/// `[text]` or `[text_a, text_b]`.
fn sequence(parts: Vec<Value>, index: Option<usize>) -> Result<Sequence, ApiError> {
    let n = parts.len();
    let mut texts = Vec::with_capacity(n);
    for part in parts {
        match part {
            Value::String(s) => texts.push(s),
            other => return Err(wrong(&other, index)),
        }
    }
    let mut texts = texts.into_iter();
    match (texts.next(), texts.next(), n) {
        (Some(a), None, 1) => Ok(Sequence::Single(a)),
        (Some(a), Some(b), 2) => Ok(Sequence::Pair(a, b)),
        _ => Err(ApiError::validation(format!(
            "{}a list of {n} strings: {EXPECTED}",
            at(index)
        ))),
    }
}

fn at(index: Option<usize>) -> String {
    index.map_or(String::new(), |i| format!("input {i}: "))
}

fn wrong(value: &Value, index: Option<usize>) -> ApiError {
    let kind = match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    };
    ApiError::validation(format!("{}{kind} in `inputs`: {EXPECTED}", at(index)))
}

/// One label's score, as TEI writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scored {
    /// Probability (or logit with `raw_scores`).
    pub score: f32,
    /// The label's name.
    pub label: String,
}

/// The answer to `/predict`: one list for one input, a list of lists for a batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PredictResponse {
    /// Every label, highest score first.
    Single(Vec<Scored>),
    /// One such list per input, in input order.
    Batch(Vec<Vec<Scored>>),
}

/// TEI's error body, `{"error": ..., "error_type": ...}`, with its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// What went wrong, for a person.
    pub error: String,
    /// TEI's kind: `validation`, `tokenizer`, `overloaded`, `backend`,
    /// `unhealthy`; and `not_found`, `method_not_allowed` for routes,
    /// `timeout` for a body that arrives too slowly.
    pub error_type: &'static str,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    error_type: &'a str,
}

impl ApiError {
    /// 422: a request TEI would refuse as invalid.
    pub fn validation(error: String) -> Self {
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            error: format!("Input validation error: {error}"),
            error_type: "validation",
        }
    }

    /// 413: too many inputs or too large a body.
    pub fn too_large(error: String) -> Self {
        Self {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            error: format!("Input validation error: {error}"),
            error_type: "validation",
        }
    }

    /// 422: the tokenizer refused the text.
    pub fn tokenizer(error: String) -> Self {
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            error: format!("tokenizer error {error}"),
            error_type: "tokenizer",
        }
    }

    /// 408: the request body took longer than the body timeout.
    pub fn timeout(error: String) -> Self {
        Self {
            status: StatusCode::REQUEST_TIMEOUT,
            error,
            error_type: "timeout",
        }
    }

    /// 429: `--max-concurrent-requests` reached.
    pub fn overloaded() -> Self {
        Self {
            status: StatusCode::TOO_MANY_REQUESTS,
            error: "Model is overloaded".into(),
            error_type: "overloaded",
        }
    }

    /// 424 (TEI's status for a failed forward pass).
    pub fn backend(error: String) -> Self {
        Self {
            status: StatusCode::FAILED_DEPENDENCY,
            error: format!("Backend error: {error}"),
            error_type: "backend",
        }
    }

    /// 503: the inference thread is gone.
    pub fn unhealthy() -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            error: "unhealthy".into(),
            error_type: "unhealthy",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: &self.error,
            error_type: self.error_type,
        };
        (self.status, axum::Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(json: &str) -> Result<PredictInputs, ApiError> {
        PredictRequest::from_json(json.as_bytes()).map(|r| r.inputs)
    }

    #[test]
    fn reads_teis_shapes() {
        use Sequence::{Pair, Single};
        let s = |t: &str| t.to_string();
        assert_eq!(
            inputs(r#"{"inputs": "a"}"#).unwrap(),
            PredictInputs::Single(Single(s("a")))
        );
        assert_eq!(
            inputs(r#"{"inputs": ["a"]}"#).unwrap(),
            PredictInputs::Single(Single(s("a")))
        );
        assert_eq!(
            inputs(r#"{"inputs": ["a", "b"]}"#).unwrap(),
            PredictInputs::Single(Pair(s("a"), s("b")))
        );
        assert_eq!(
            inputs(r#"{"inputs": [["a"], ["b", "c"]]}"#).unwrap(),
            PredictInputs::Batch(vec![Single(s("a")), Pair(s("b"), s("c"))])
        );
    }

    #[test]
    fn refuses_wrong_shapes_with_422() {
        for body in [
            r#"{"inputs": []}"#,
            r#"{"inputs": ["a", "b", "c"]}"#,
            r#"{"inputs": [["a"], "b"]}"#,
            r#"{"inputs": [[]]}"#,
            r#"{"inputs": 3}"#,
            r#"{"inputs": ["a", 3]}"#,
            r#"{"text": "a"}"#,
            r#"{"inputs": "a", "raw_scores": "yes"}"#,
            r#"{"inputs": "a", "truncation_direction": "middle"}"#,
            "not json",
        ] {
            let e = inputs(body).unwrap_err();
            assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
            assert_eq!(e.error_type, "validation", "{body}");
        }
    }
}
