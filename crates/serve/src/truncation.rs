//! TEI's `"truncation_direction": "Left"`: a text longer than the max length
//! keeps its end instead of its start, as `transformers` tokenizers do with
//! `truncation_side="left"`.

use zhbert_tokenizer::{BertTokenizer, Encoded, TokenizerError};

/// `[CLS] a [SEP]` (or `[CLS] a [SEP] b [SEP]`) cut to `max_length` from the
/// left: each text keeps as many tokens as right truncation keeps (the
/// `longest_first` lengths, which do not depend on the side), but its last
/// ones. Unchanged when nothing has to be cut.
pub(crate) fn encode_left(
    tokenizer: &BertTokenizer,
    a: &str,
    b: Option<&str>,
    max_length: usize,
) -> Result<Encoded, TokenizerError> {
    let right = tokenizer.encode(a, b, Some(max_length))?;
    if right.truncated_tokens == 0 {
        return Ok(right);
    }
    // The second text and its [SEP] have token type 1; [CLS] a [SEP] type 0.
    let second = right.token_type_ids.iter().filter(|&&t| t == 1).count();
    let keep_a = right.input_ids.len() - second - 2;
    let mut input_ids = Vec::with_capacity(right.input_ids.len());
    input_ids.push(tokenizer.cls_id());
    input_ids.extend_from_slice(last(&text_ids(tokenizer, a)?, keep_a));
    input_ids.push(tokenizer.sep_id());
    let first = input_ids.len();
    if let Some(b) = b {
        input_ids.extend_from_slice(last(&text_ids(tokenizer, b)?, second - 1));
        input_ids.push(tokenizer.sep_id());
    }
    let mut token_type_ids = vec![0; first];
    token_type_ids.resize(input_ids.len(), 1);
    Ok(Encoded {
        attention_mask: vec![1; input_ids.len()],
        input_ids,
        token_type_ids,
        truncated_tokens: right.truncated_tokens,
    })
}

/// A text's tokens, without the special tokens the tokenizer adds.
fn text_ids(tokenizer: &BertTokenizer, text: &str) -> Result<Vec<u32>, TokenizerError> {
    let mut ids = tokenizer.encode(text, None, None)?.input_ids;
    ids.pop();
    ids.remove(0);
    Ok(ids)
}

fn last(ids: &[u32], n: usize) -> &[u32] {
    &ids[ids.len().saturating_sub(n)..]
}
