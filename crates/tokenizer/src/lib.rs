//! # zhbert-tokenizer
//!
//! The BERT WordPiece tokenizer of `transformers`, for Chinese text, on the Rust
//! [`tokenizers`] crate. It gives the same ids as the pure-Python reference
//! (`BertTokenizerLegacy`), including the `longest_first` truncation of text pairs,
//! which `tokenizers` itself breaks ties for differently.
//!
//! ## Quick start
//!
//! ```no_run
//! use zhbert_tokenizer::{BertTokenizer, Padding};
//!
//! let tokenizer = BertTokenizer::from_dir("my-model").unwrap();
//! let one = tokenizer.encode("这本书很好看", None, Some(128)).unwrap();
//! assert_eq!(one.input_ids[0], tokenizer.cls_id());
//!
//! let batch = tokenizer
//!     .encode_batch(&[("质量不错", None), ("太慢了", None)], Some(128), Padding::Longest)
//!     .unwrap();
//! assert_eq!(batch.input_ids.len(), batch.batch_size * batch.seq_len);
//! ```
//!
//! ## What it reads
//!
//! | file | when |
//! | --- | --- |
//! | `tokenizer.json` | preferred when present, as `AutoTokenizer` does |
//! | `vocab.txt` | otherwise; BERT WordPiece with the basic tokenizer's rules |
//! | `tokenizer_config.json` | optional: `do_lower_case`, `tokenize_chinese_chars`, `strip_accents`, `model_max_length` |
//!
//! [`build_char_vocab`] makes a Chinese character vocabulary from raw text, and
//! [`build_wordpiece_vocab`] a WordPiece one learned by merges, for models
//! trained from scratch. [`BertTokenizer::isolate_unknown_chars`] keeps a
//! word with a character outside the vocabulary (or over 100 characters long)
//! from becoming one `[UNK]`, as it does with `tokenize_chinese_chars` off,
//! where a run of Chinese is one word; saved, it loads in `transformers`
//! with the same ids.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{
    Encoding, Normalizer, PreTokenizer, SplitDelimiterBehavior, Tokenizer, TruncationDirection,
};

/// Everything that can go wrong while loading or using a tokenizer. Each message
/// names the file or the input it is about.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file was read but its content is not what was expected.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The folder holds neither `tokenizer.json` nor `vocab.txt`.
    #[error("{0}: no tokenizer.json or vocab.txt in this folder")]
    NotFound(PathBuf),
    /// An error from the `tokenizers` crate while encoding or decoding.
    #[error("tokenizer: {0}")]
    Tokenizers(String),
    /// A request that cannot be satisfied, such as `max_length` smaller than the special tokens.
    #[error("{0}")]
    Request(String),
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, TokenizerError>;

fn tk_err(e: impl std::fmt::Display) -> TokenizerError {
    TokenizerError::Tokenizers(e.to_string())
}

/// The settings of HF's `tokenizer_config.json` that change how text is split.
///
/// Unknown fields are ignored; missing fields take BERT's defaults.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TokenizerConfig {
    /// Lowercase the text (and strip accents unless `strip_accents` says otherwise).
    #[serde(default = "yes")]
    pub do_lower_case: bool,
    /// Put spaces around every CJK character so each becomes its own token.
    #[serde(default = "yes")]
    pub tokenize_chinese_chars: bool,
    /// `None` follows `do_lower_case`, as in BERT.
    #[serde(default)]
    pub strip_accents: Option<bool>,
    /// The longest input the model accepts, used when no `max_length` is given.
    #[serde(default = "default_max_len")]
    pub model_max_length: usize,
}

fn yes() -> bool {
    true
}
fn default_max_len() -> usize {
    512
}

impl Default for TokenizerConfig {
    fn default() -> Self {
        Self {
            do_lower_case: true,
            tokenize_chinese_chars: true,
            strip_accents: None,
            model_max_length: default_max_len(),
        }
    }
}

impl TokenizerConfig {
    /// Reads `tokenizer_config.json`. Absurd `model_max_length` values that HF writes
    /// for "no limit" (`1e30`) are kept as `usize::MAX`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = fs::read_to_string(path).map_err(|source| TokenizerError::Io {
            path: path.into(),
            source,
        })?;
        let mut value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| TokenizerError::Invalid {
                path: path.into(),
                message: format!("not valid JSON: {e}"),
            })?;
        // HF writes 1e30 (a float) for "unlimited"; serde would refuse it as usize.
        if let Some(v) = value.get_mut("model_max_length") {
            if let Some(f) = v.as_f64() {
                *v = serde_json::json!(if f >= usize::MAX as f64 {
                    usize::MAX
                } else {
                    f as usize
                });
            }
        }
        serde_json::from_value(value).map_err(|e| TokenizerError::Invalid {
            path: path.into(),
            message: e.to_string(),
        })
    }
}

/// One encoded input: what BERT's forward pass takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// Token ids, `[CLS] a [SEP]` or `[CLS] a [SEP] b [SEP]`.
    pub input_ids: Vec<u32>,
    /// 0 for the first text and its special tokens, 1 for the second.
    pub token_type_ids: Vec<u32>,
    /// 1 for real tokens, 0 for padding.
    pub attention_mask: Vec<u32>,
    /// How many tokens of the texts (not counting special tokens) truncation removed.
    pub truncated_tokens: usize,
}

/// How a batch is padded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    /// To the longest sequence in the batch (HF `padding="longest"`), rounded
    /// up to a multiple when [`BertTokenizer::set_pad_to_multiple_of`] says so.
    Longest,
    /// To this fixed length (HF `padding="max_length"`); longer inputs must be truncated first.
    Fixed(usize),
}

/// A padded batch, row-major `[batch_size, seq_len]`, ready for a tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Number of rows.
    pub batch_size: usize,
    /// Length of every row after padding.
    pub seq_len: usize,
    /// `[batch_size * seq_len]` token ids.
    pub input_ids: Vec<u32>,
    /// `[batch_size * seq_len]` segment ids.
    pub token_type_ids: Vec<u32>,
    /// `[batch_size * seq_len]` 1 for real tokens, 0 for padding.
    pub attention_mask: Vec<u32>,
    /// Per row: tokens removed by truncation.
    pub truncated_tokens: Vec<usize>,
}

/// The files of an HF model folder that describe its tokenizer (each
/// optional; [`BertTokenizer::from_dir`] needs `vocab.txt` or `tokenizer.json`,
/// [`BertTokenizer::save`] writes all four).
pub const TOKENIZER_FILES: [&str; 4] = [
    "tokenizer.json",
    "vocab.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
];

/// A BERT WordPiece tokenizer.
#[derive(Clone)]
pub struct BertTokenizer {
    inner: Tokenizer,
    config: TokenizerConfig,
    cls_id: u32,
    sep_id: u32,
    pad_id: u32,
    /// `(multiple, limit)` of [`BertTokenizer::set_pad_to_multiple_of`].
    pad_to_multiple_of: Option<(usize, usize)>,
}

impl std::fmt::Debug for BertTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BertTokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("config", &self.config)
            .finish()
    }
}

/// The special tokens of BERT, in the names HF uses.
pub const SPECIAL_TOKENS: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];

impl BertTokenizer {
    /// Loads from an HF model folder: `tokenizer.json` when present, else `vocab.txt`
    /// with `tokenizer_config.json` (when present).
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let config_path = dir.join("tokenizer_config.json");
        let config = if config_path.is_file() {
            TokenizerConfig::from_file(&config_path)?
        } else {
            TokenizerConfig::default()
        };
        let json = dir.join("tokenizer.json");
        let vocab = dir.join("vocab.txt");
        if json.is_file() {
            let mut tok = Self::from_tokenizer_json(&json)?;
            tok.config = config;
            Ok(tok)
        } else if vocab.is_file() {
            Self::from_vocab_file(&vocab, config)
        } else {
            Err(TokenizerError::NotFound(dir.into()))
        }
    }

    /// Builds BERT's tokenizer from a WordPiece `vocab.txt`, with the basic
    /// tokenizer's rules as `config` sets them.
    pub fn from_vocab_file(path: impl AsRef<Path>, config: TokenizerConfig) -> Result<Self> {
        let path = path.as_ref();
        let bytes = fs::read(path).map_err(|source| TokenizerError::Io {
            path: path.into(),
            source,
        })?;
        let text = String::from_utf8(bytes).map_err(|e| TokenizerError::Invalid {
            path: path.into(),
            message: format!("not UTF-8 (byte {})", e.utf8_error().valid_up_to()),
        })?;
        let vocab: Vec<String> = text
            .lines()
            .map(|l| l.trim_end_matches('\r').to_string())
            .collect();
        Self::from_vocab(&vocab, config).map_err(|e| match e {
            TokenizerError::Request(message) => TokenizerError::Invalid {
                path: path.into(),
                message,
            },
            other => other,
        })
    }

    /// Builds the tokenizer from vocabulary entries in id order.
    pub fn from_vocab(vocab: &[String], config: TokenizerConfig) -> Result<Self> {
        let mut seen = std::collections::HashSet::with_capacity(vocab.len());
        for (i, token) in vocab.iter().enumerate() {
            // transformers keeps the last id of a duplicated line and would silently
            // shift every id after it: refuse such a vocabulary instead.
            if !seen.insert(token.as_str()) {
                return Err(TokenizerError::Request(format!(
                    "vocabulary line {}: token {:?} appears twice",
                    i + 1,
                    token
                )));
            }
        }
        for special in ["[UNK]", "[CLS]", "[SEP]", "[PAD]"] {
            if !seen.contains(special) {
                return Err(TokenizerError::Request(format!(
                    "vocabulary has no {special} token"
                )));
            }
        }
        let map = WordPiece::read_bytes(vocab.join("\n").as_bytes()).map_err(tk_err)?;
        let wordpiece = WordPiece::builder()
            .vocab(map)
            .unk_token("[UNK]".into())
            .continuing_subword_prefix("##".into())
            .max_input_chars_per_word(100)
            .build()
            .map_err(tk_err)?;
        let mut inner = Tokenizer::new(wordpiece);
        inner
            .with_normalizer(Some(BertNormalizer::new(
                true,
                config.tokenize_chinese_chars,
                config.strip_accents,
                config.do_lower_case,
            )))
            .map_err(tk_err)?;
        inner.with_pre_tokenizer(Some(BertPreTokenizer));
        inner.with_decoder(Some(WordPieceDecoder::default()));
        Self::finish(inner, config)
    }

    /// Loads a `tokenizer.json` written by HF `tokenizers`. Its own truncation and
    /// padding settings are ignored: they are chosen per call here.
    pub fn from_tokenizer_json(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let mut inner = Tokenizer::from_file(path).map_err(|e| TokenizerError::Invalid {
            path: path.into(),
            message: e.to_string(),
        })?;
        inner.with_truncation(None).map_err(tk_err)?;
        inner.with_padding(None);
        Self::finish(inner, TokenizerConfig::default()).map_err(|e| match e {
            TokenizerError::Request(message) => TokenizerError::Invalid {
                path: path.into(),
                message,
            },
            other => other,
        })
    }

    fn finish(mut inner: Tokenizer, config: TokenizerConfig) -> Result<Self> {
        let id = |t: &str| {
            inner
                .token_to_id(t)
                .ok_or_else(|| TokenizerError::Request(format!("vocabulary has no {t} token")))
        };
        let (cls_id, sep_id, pad_id) = (id("[CLS]")?, id("[SEP]")?, id("[PAD]")?);
        // The special tokens are added here (not by `tokenizers`' truncation) so
        // that pairs are truncated exactly like the Python reference.
        inner.with_post_processor(Some(BertProcessing::new(
            ("[SEP]".into(), sep_id),
            ("[CLS]".into(), cls_id),
        )));
        Ok(Self {
            inner,
            config,
            cls_id,
            sep_id,
            pad_id,
            pad_to_multiple_of: None,
        })
    }

    /// From now on [`Padding::Longest`] pads to a multiple of `multiple` tokens
    /// (HF's `pad_to_multiple_of`), but never past `limit` tokens (the model's
    /// `max_position_embeddings`); `multiple` 0 or 1 turns it off.
    ///
    /// Why: GPU backends tune and compile kernels per tensor shape, and a batch
    /// padded to its longest text has a new shape almost every step; padded to
    /// a multiple of 32 there are four shapes up to 128 tokens. The padding is
    /// masked, so the outputs at the real tokens do not change.
    pub fn set_pad_to_multiple_of(&mut self, multiple: usize, limit: usize) {
        self.pad_to_multiple_of = (multiple > 1).then_some((multiple, limit));
    }

    /// The settings this tokenizer splits text with.
    pub fn config(&self) -> &TokenizerConfig {
        &self.config
    }
    /// Number of entries in the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
    /// Id of `[CLS]`.
    pub fn cls_id(&self) -> u32 {
        self.cls_id
    }
    /// Id of `[SEP]`.
    pub fn sep_id(&self) -> u32 {
        self.sep_id
    }
    /// Id of `[PAD]`.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }
    /// Id of a token, if it is in the vocabulary.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }
    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    /// Id of `[UNK]`, if the vocabulary has it.
    pub fn unk_id(&self) -> Option<u32> {
        self.inner.token_to_id("[UNK]")
    }

    /// Makes a character outside the vocabulary its own `[UNK]`, and cuts runs
    /// longer than WordPiece reads as one word, instead of losing the whole word.
    ///
    /// Why: WordPiece turns a word into a single `[UNK]` when one of its
    /// characters has no piece, or when it is longer than
    /// `max_input_chars_per_word` (100). With `tokenize_chinese_chars` off a
    /// word is a whole run of Chinese between punctuation, so one emoji or rare
    /// character erased a sentence. This adds a `Split` step after BERT's
    /// pre-tokenizer: a word is cut wherever WordPiece could not go on (a
    /// character with no piece of its own at the start, no `##` piece after
    /// it) and after each `max_input_chars_per_word` characters. A word
    /// WordPiece could read before is never cut (every character of a piece
    /// after its first has a `##` piece, by how WordPiece vocabularies are
    /// built), so only texts that had such an `[UNK]` change.
    ///
    /// The step is saved in `tokenizer.json`; [`BertTokenizer::save`] then
    /// names `PreTrainedTokenizerFast` in `tokenizer_config.json`, which
    /// `transformers` loads as written (its `BertTokenizer` would rebuild the
    /// plain pipeline from `vocab.txt`).
    pub fn isolate_unknown_chars(&mut self) -> Result<()> {
        let max_chars = match self.inner.get_model() {
            tokenizers::models::ModelWrapper::WordPiece(wp) => wp.max_input_chars_per_word,
            _ => {
                return Err(TokenizerError::Request(
                    "isolating unknown characters needs a WordPiece model".into(),
                ))
            }
        };
        let (mut first, mut next) = (Vec::new(), Vec::new());
        for token in self.inner.get_vocab(true).into_keys() {
            let rest = token.strip_prefix("##");
            let mut chars = rest.unwrap_or(&token).chars();
            if let (Some(c), None) = (chars.next(), chars.next()) {
                if rest.is_some() {
                    next.push(c)
                } else {
                    first.push(c)
                }
            }
        }
        if first.is_empty() {
            return Err(TokenizerError::Request(
                "the vocabulary has no single-character entries".into(),
            ));
        }
        // A readable word, at most `max_chars` long, else any one character.
        let continuation = if next.is_empty() || max_chars < 2 {
            String::new()
        } else {
            format!("{}{{0,{}}}", char_class(next), max_chars - 1)
        };
        let pattern = format!("{}{continuation}|.", char_class(first));
        let split = Split::new(
            SplitPattern::Regex(pattern),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(tk_err)?;
        self.inner
            .with_pre_tokenizer(Some(PreTokenizerSequence::new(vec![
                BertPreTokenizer.into(),
                split.into(),
            ])));
        Ok(())
    }

    /// Whether more than half of the tokens of `text` (special tokens aside)
    /// are `[UNK]`: the model reads next to nothing of such a text, and its
    /// prediction is close to the same for all of them.
    pub fn is_mostly_unknown(&self, text: &str) -> Result<bool> {
        let tokens = self.tokenize(text)?;
        let unknown = tokens.iter().filter(|t| *t == "[UNK]").count();
        Ok(unknown * 2 > tokens.len())
    }

    /// Whether the pipeline is BERT's own (what `transformers`' `BertTokenizer`
    /// builds from `vocab.txt`), so that class can be named when saving.
    fn is_plain_bert(&self) -> bool {
        matches!(
            self.inner.get_pre_tokenizer(),
            None | Some(tokenizers::PreTokenizerWrapper::BertPreTokenizer(_))
        )
    }

    /// Splits text into WordPiece tokens, without special tokens.
    pub fn tokenize(&self, text: &str) -> Result<Vec<String>> {
        let enc = self
            .inner
            .encode(final_sigma(text, &self.config)?.as_ref(), false)
            .map_err(tk_err)?;
        Ok(enc.get_tokens().to_vec())
    }

    /// Encodes one text or a text pair, adding `[CLS]`/`[SEP]`. With `max_length`,
    /// the texts are truncated `longest_first` as in `transformers`: one token at a
    /// time from the longer text, from the second text on ties.
    pub fn encode(
        &self,
        text: &str,
        pair: Option<&str>,
        max_length: Option<usize>,
    ) -> Result<Encoded> {
        let split = |t: &str| {
            self.inner
                .encode(final_sigma(t, &self.config)?.as_ref(), false)
                .map_err(tk_err)
        };
        let first = split(text)?;
        let second = pair.map(split).transpose()?;
        let (first, second, truncated_tokens) = truncate_longest_first(first, second, max_length)?;
        let enc = self
            .inner
            .post_process(first, second, true)
            .map_err(tk_err)?;
        Ok(Encoded {
            input_ids: enc.get_ids().to_vec(),
            token_type_ids: enc.get_type_ids().to_vec(),
            attention_mask: enc.get_attention_mask().to_vec(),
            truncated_tokens,
        })
    }

    /// Encodes many inputs in parallel (rayon) and pads them into one batch.
    pub fn encode_batch<S: AsRef<str> + Sync>(
        &self,
        inputs: &[(S, Option<S>)],
        max_length: Option<usize>,
        padding: Padding,
    ) -> Result<Batch> {
        let encoded: Vec<Encoded> = inputs
            .par_iter()
            .map(|(a, b)| self.encode(a.as_ref(), b.as_ref().map(|s| s.as_ref()), max_length))
            .collect::<Result<_>>()?;
        self.pad(&encoded, padding)
    }

    /// Pads already encoded inputs into one batch (HF's `DataCollatorWithPadding`).
    pub fn pad(&self, encoded: &[Encoded], padding: Padding) -> Result<Batch> {
        let longest = encoded.iter().map(|e| e.input_ids.len()).max().unwrap_or(0);
        let seq_len = match padding {
            Padding::Longest => match self.pad_to_multiple_of {
                Some((multiple, limit)) => longest.next_multiple_of(multiple).min(limit.max(longest)),
                None => longest,
            },
            Padding::Fixed(n) if n >= longest => n,
            Padding::Fixed(n) => {
                return Err(TokenizerError::Request(format!(
                    "an input has {longest} tokens, more than the fixed padding length {n}: truncate with max_length"
                )))
            }
        };
        let n = encoded.len() * seq_len;
        let mut batch = Batch {
            batch_size: encoded.len(),
            seq_len,
            input_ids: Vec::with_capacity(n),
            token_type_ids: Vec::with_capacity(n),
            attention_mask: Vec::with_capacity(n),
            truncated_tokens: Vec::with_capacity(encoded.len()),
        };
        for e in encoded {
            let pad = seq_len - e.input_ids.len();
            batch.input_ids.extend(&e.input_ids);
            batch
                .input_ids
                .extend(std::iter::repeat_n(self.pad_id, pad));
            batch.token_type_ids.extend(&e.token_type_ids);
            batch.token_type_ids.extend(std::iter::repeat_n(0, pad));
            batch.attention_mask.extend(&e.attention_mask);
            batch.attention_mask.extend(std::iter::repeat_n(0, pad));
            batch.truncated_tokens.push(e.truncated_tokens);
        }
        Ok(batch)
    }

    /// Turns ids back into text, as HF `decode` does (WordPiece pieces joined,
    /// spaces cleaned up).
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner.decode(ids, skip_special_tokens).map_err(tk_err)
    }

    /// Writes `vocab.txt`, `tokenizer.json`, `tokenizer_config.json` and
    /// `special_tokens_map.json` into `dir`, so both zhbert and `transformers` load it.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        fs::create_dir_all(dir).map_err(|source| TokenizerError::Io {
            path: dir.into(),
            source,
        })?;
        let mut vocab: Vec<(String, u32)> = self.inner.get_vocab(true).into_iter().collect();
        vocab.sort_by_key(|(_, id)| *id);
        let mut text = String::new();
        for (token, _) in &vocab {
            text.push_str(token);
            text.push('\n');
        }
        let write = |name: &str, bytes: &[u8]| {
            let path = dir.join(name);
            write_atomic(&path, bytes).map_err(|source| TokenizerError::Io { path, source })
        };
        write("vocab.txt", text.as_bytes())?;
        let json = self.inner.to_string(true).map_err(tk_err)?;
        write("tokenizer.json", json.as_bytes())?;
        // transformers' BertTokenizer rebuilds its pipeline from vocab.txt;
        // another pipeline needs the class that loads tokenizer.json as it is.
        let (class, input_names) = if self.is_plain_bert() {
            ("BertTokenizer", serde_json::Value::Null)
        } else {
            (
                "PreTrainedTokenizerFast",
                serde_json::json!(["input_ids", "token_type_ids", "attention_mask"]),
            )
        };
        let mut config = serde_json::json!({
            "tokenizer_class": class,
            "do_lower_case": self.config.do_lower_case,
            "tokenize_chinese_chars": self.config.tokenize_chinese_chars,
            "strip_accents": self.config.strip_accents,
            "model_max_length": self.config.model_max_length,
            "unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]",
            "cls_token": "[CLS]", "mask_token": "[MASK]",
        });
        if !input_names.is_null() {
            config["model_input_names"] = input_names;
        }
        write(
            "tokenizer_config.json",
            serde_json::to_string_pretty(&config).unwrap().as_bytes(),
        )?;
        let special = serde_json::json!({
            "unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]",
            "cls_token": "[CLS]", "mask_token": "[MASK]",
        });
        write(
            "special_tokens_map.json",
            serde_json::to_string_pretty(&special).unwrap().as_bytes(),
        )?;
        Ok(())
    }
}

/// A regex character class (Oniguruma syntax, as `tokenizers` and its Python
/// package compile it) of `chars`, as ranges of code points.
fn char_class(mut chars: Vec<char>) -> String {
    chars.sort_unstable();
    chars.dedup();
    let mut class = String::from("[");
    let mut i = 0;
    while i < chars.len() {
        let start = chars[i];
        while i + 1 < chars.len() && chars[i + 1] as u32 == chars[i] as u32 + 1 {
            i += 1;
        }
        class.push_str(&format!("\\x{{{:X}}}", start as u32));
        if chars[i] != start {
            class.push_str(&format!("-\\x{{{:X}}}", chars[i] as u32));
        }
        i += 1;
    }
    class.push(']');
    class
}

/// Python's `str.lower()` turns a word-final `Σ` into `ς`; `tokenizers` lowercases
/// one character at a time and always gives `σ`. For the (rare) texts with a
/// capital sigma, lowercase the cleaned text with Rust's `to_lowercase`, which
/// applies the same Unicode final-sigma rule, before the normal pipeline. Cleaning
/// first matters: a removed control character can join a sigma to the next letter.
fn final_sigma<'a>(text: &'a str, config: &TokenizerConfig) -> Result<std::borrow::Cow<'a, str>> {
    if !config.do_lower_case || !text.contains('\u{3a3}') {
        return Ok(std::borrow::Cow::Borrowed(text));
    }
    let mut cleaned = tokenizers::NormalizedString::from(text);
    BertNormalizer::new(true, false, Some(false), false)
        .normalize(&mut cleaned)
        .map_err(tk_err)?;
    Ok(std::borrow::Cow::Owned(cleaned.get().to_lowercase()))
}

/// `transformers`' `longest_first`: remove one token at a time from the longer
/// text, from the second on ties, until both fit `max_length` with the special tokens.
fn truncate_longest_first(
    mut first: Encoding,
    mut second: Option<Encoding>,
    max_length: Option<usize>,
) -> Result<(Encoding, Option<Encoding>, usize)> {
    let Some(max_length) = max_length else {
        return Ok((first, second, 0));
    };
    let specials = if second.is_some() { 3 } else { 2 };
    let budget = max_length.checked_sub(specials).ok_or_else(|| {
        TokenizerError::Request(format!(
            "max_length {max_length} leaves no room for the {specials} special tokens"
        ))
    })?;
    let (mut a, mut b) = (first.len(), second.as_ref().map_or(0, |s| s.len()));
    let removed = (a + b).saturating_sub(budget);
    if removed == 0 {
        return Ok((first, second, 0));
    }
    // Closed form of the one-at-a-time loop: first bring the longer down to the
    // shorter, then alternate, the second text giving up a token first.
    let mut left = removed;
    if a > b {
        let d = (a - b).min(left);
        a -= d;
        left -= d;
    } else if b > a {
        let d = (b - a).min(left);
        b -= d;
        left -= d;
    }
    if left > 0 {
        // Now a == b (or one is empty only when both are).
        b -= left.div_ceil(2);
        a -= left / 2;
    }
    first.truncate(a, 0, TruncationDirection::Right);
    if let Some(s) = second.as_mut() {
        s.truncate(b, 0, TruncationDirection::Right);
    }
    Ok((first, second, removed))
}

/// Writes a file atomically (temporary file, fsync, rename), so a crash never
/// leaves half a file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = atomic_write_file::AtomicWriteFile::open(path)?;
    file.write_all(bytes)?;
    file.commit()
}

/// Builds a character vocabulary from raw text, for a BERT trained from scratch.
///
/// The text is split by BERT's basic tokenizer (as `config` sets it: clean text,
/// CJK characters apart, lowercase and accents, punctuation and whitespace). Each
/// token's first character counts as `c` and each following character as `##c`,
/// so words in Latin script are still spelled out by WordPiece. Entries seen at
/// least `min_count` times are kept, most frequent first (ties in code point
/// order), at most `max_size` of them, after BERT's five special tokens.
pub fn build_char_vocab<'a>(
    texts: impl IntoIterator<Item = &'a str>,
    config: &TokenizerConfig,
    min_count: usize,
    max_size: usize,
) -> Result<Vec<String>> {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for_each_word(texts, config, |word| {
        for (i, c) in word.chars().enumerate() {
            let key = if i == 0 {
                c.to_string()
            } else {
                format!("##{c}")
            };
            *counts.entry(key).or_default() += 1;
        }
    })?;
    let mut kept: Vec<(String, usize)> = counts
        .into_iter()
        .filter(|(t, n)| *n >= min_count && !SPECIAL_TOKENS.contains(&t.as_str()))
        .collect();
    kept.sort_by(|(ta, na), (tb, nb)| nb.cmp(na).then_with(|| ta.cmp(tb)));
    kept.truncate(max_size);
    Ok(SPECIAL_TOKENS
        .iter()
        .map(|s| s.to_string())
        .chain(kept.into_iter().map(|(t, _)| t))
        .collect())
}

/// Builds a WordPiece vocabulary by merging frequent pairs, as HF `tokenizers`'
/// `WordPieceTrainer` does, for a BERT trained from scratch.
///
/// The text is split into words by BERT's basic tokenizer (as `config` sets it;
/// with `tokenize_chinese_chars` off a run of Chinese is one word). Each word
/// starts as its characters, `c` first and `##c` after. The vocabulary is BERT's
/// five special tokens, every character seen (in code point order, then the
/// `##` forms as they first occur in the sorted words), then one new piece per
/// merge: again and again, the adjacent pair seen most often in the words
/// becomes one piece (`质` + `##量` is `质量`, `##很` + `##好` is `##很好`),
/// until `size` entries or until no pair is seen `min_count` times.
///
/// This is HF's algorithm with one difference: HF numbers the `##` forms in hash
/// order, and breaks ties between equally frequent pairs by those numbers, so its
/// vocabulary changes from one run to the next; here words are sorted first, so
/// the same text always gives the same vocabulary.
pub fn build_wordpiece_vocab<'a>(
    texts: impl IntoIterator<Item = &'a str>,
    config: &TokenizerConfig,
    size: usize,
    min_count: usize,
) -> Result<Vec<String>> {
    let words = sorted_word_counts(texts, config)?;
    let (mut pieces, symbols) = initial_pieces(&words);
    let mut merges = Merges::new(symbols, words.iter().map(|(_, n)| *n as i64).collect());
    while pieces.vocab.len() < size {
        let Some((pair, n)) = merges.most_frequent() else {
            break;
        };
        if n < min_count as i64 {
            break;
        }
        let merged = format!(
            "{}{}",
            pieces.vocab[pair.0 as usize],
            pieces.vocab[pair.1 as usize].trim_start_matches("##")
        );
        let merged = pieces.id(merged);
        merges.apply(pair, merged);
    }
    Ok(pieces.vocab)
}

/// The distinct words of the texts with their counts, sorted (by word, then
/// count) so that the vocabulary does not depend on hash order.
fn sorted_word_counts<'a>(
    texts: impl IntoIterator<Item = &'a str>,
    config: &TokenizerConfig,
) -> Result<Vec<(String, u64)>> {
    let mut word_counts: HashMap<String, u64> = HashMap::new();
    for_each_word(texts, config, |word| {
        *word_counts.entry(word.to_string()).or_default() += 1;
    })?;
    let mut words: Vec<(String, u64)> = word_counts.into_iter().collect();
    words.sort_unstable();
    Ok(words)
}

/// The vocabulary before any merge (special tokens, every character in code
/// point order, then the `##` forms as they first occur in the sorted words)
/// and each word as its piece ids: `c` first, `##c` after.
fn initial_pieces(words: &[(String, u64)]) -> (Pieces, Vec<Vec<u32>>) {
    let mut pieces = Pieces::default();
    for token in SPECIAL_TOKENS {
        pieces.id(token.to_string());
    }
    let alphabet: std::collections::BTreeSet<char> =
        words.iter().flat_map(|(w, _)| w.chars()).collect();
    for c in alphabet {
        pieces.id(c.to_string());
    }
    let symbols = words
        .iter()
        .map(|(word, _)| {
            word.chars()
                .enumerate()
                .map(|(i, c)| {
                    pieces.id(if i == 0 {
                        c.to_string()
                    } else {
                        format!("##{c}")
                    })
                })
                .collect()
        })
        .collect();
    (pieces, symbols)
}

/// Two adjacent piece ids.
type Pair = (u32, u32);

/// The state of WordPiece training: each word as pieces, how often each
/// adjacent pair occurs (weighted by word count), and which words hold it.
struct Merges {
    /// Each distinct word as piece ids.
    symbols: Vec<Vec<u32>>,
    /// How often each word occurs.
    counts: Vec<i64>,
    pair_counts: HashMap<Pair, i64>,
    /// The words a pair occurs in (possibly listed twice, or no longer).
    words_with: HashMap<Pair, Vec<usize>>,
    /// Pairs by count: most frequent first; among equals, the pair of the
    /// smaller ids (as HF).
    queue: std::collections::BinaryHeap<(i64, std::cmp::Reverse<Pair>)>,
}

impl Merges {
    fn new(symbols: Vec<Vec<u32>>, counts: Vec<i64>) -> Self {
        let mut pair_counts: HashMap<Pair, i64> = HashMap::new();
        let mut words_with: HashMap<Pair, Vec<usize>> = HashMap::new();
        for (w, word) in symbols.iter().enumerate() {
            for pair in word.windows(2).map(|p| (p[0], p[1])) {
                *pair_counts.entry(pair).or_default() += counts[w];
                words_with.entry(pair).or_default().push(w);
            }
        }
        let queue = pair_counts
            .iter()
            .map(|(&pair, &n)| (n, std::cmp::Reverse(pair)))
            .collect();
        Self {
            symbols,
            counts,
            pair_counts,
            words_with,
            queue,
        }
    }

    /// The pair seen most often now and its count; `None` once no pair is left.
    fn most_frequent(&mut self) -> Option<(Pair, i64)> {
        while let Some((n, std::cmp::Reverse(pair))) = self.queue.pop() {
            // Entries are not updated in place: every change of a pair's count
            // queues it again, so an entry whose count is no longer the pair's is
            // stale and dropped.
            if self.pair_counts.get(&pair).copied().unwrap_or(0) == n {
                return Some((pair, n));
            }
        }
        None
    }

    /// Replaces `pair` by the piece `merged` in every word that holds it, and
    /// queues again each pair whose count changed.
    fn apply(&mut self, pair: Pair, merged: u32) {
        self.pair_counts.remove(&pair);
        let mut changed: Vec<Pair> = Vec::new();
        for w in self.words_with.remove(&pair).unwrap_or_default() {
            let before = &self.symbols[w];
            let after = merge_pair(before, pair, merged);
            if after.len() == before.len() {
                continue; // listed twice, merged already
            }
            let count = self.counts[w];
            for p in before.windows(2).map(|p| (p[0], p[1])) {
                if p != pair {
                    *self.pair_counts.entry(p).or_default() -= count;
                    changed.push(p);
                }
            }
            for p in after.windows(2).map(|p| (p[0], p[1])) {
                *self.pair_counts.entry(p).or_default() += count;
                self.words_with.entry(p).or_default().push(w);
                changed.push(p);
            }
            self.symbols[w] = after;
        }
        changed.sort_unstable();
        changed.dedup();
        for p in changed {
            let n = self.pair_counts[&p];
            if n > 0 {
                self.queue.push((n, std::cmp::Reverse(p)));
            }
        }
    }
}

/// `word` with each occurrence of `pair` (left to right, not overlapping)
/// replaced by `merged`.
fn merge_pair(word: &[u32], pair: Pair, merged: u32) -> Vec<u32> {
    let mut after = Vec::with_capacity(word.len());
    let mut i = 0;
    while i < word.len() {
        if i + 1 < word.len() && (word[i], word[i + 1]) == pair {
            after.push(merged);
            i += 2;
        } else {
            after.push(word[i]);
            i += 1;
        }
    }
    after
}

/// A vocabulary under construction: entries in order, and their ids.
#[derive(Default)]
struct Pieces {
    vocab: Vec<String>,
    ids: HashMap<String, u32>,
}

impl Pieces {
    /// The id of `piece`, added at the end if new.
    fn id(&mut self, piece: String) -> u32 {
        if let Some(&id) = self.ids.get(&piece) {
            return id;
        }
        let id = self.vocab.len() as u32;
        self.vocab.push(piece.clone());
        self.ids.insert(piece, id);
        id
    }
}

/// Calls `f` with every word of the texts as BERT's basic tokenizer splits them
/// (as `config` sets it: clean text, CJK characters apart or not, lowercase and
/// accents, punctuation and whitespace).
fn for_each_word<'a>(
    texts: impl IntoIterator<Item = &'a str>,
    config: &TokenizerConfig,
    mut f: impl FnMut(&str),
) -> Result<()> {
    let normalizer = BertNormalizer::new(
        true,
        config.tokenize_chinese_chars,
        config.strip_accents,
        config.do_lower_case,
    );
    for text in texts {
        let mut pre = tokenizers::PreTokenizedString::from(final_sigma(text, config)?.as_ref());
        pre.normalize(|n| normalizer.normalize(n)).map_err(tk_err)?;
        BertPreTokenizer.pre_tokenize(&mut pre).map_err(tk_err)?;
        for (word, _, _) in pre.get_splits(
            tokenizers::OffsetReferential::Original,
            tokenizers::OffsetType::Char,
        ) {
            f(word);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> BertTokenizer {
        let vocab: Vec<String> = SPECIAL_TOKENS
            .iter()
            .map(|s| s.to_string())
            .chain(["好", "书", "很", "看", "a", "##b", "b"].map(String::from))
            .collect();
        BertTokenizer::from_vocab(&vocab, TokenizerConfig::default()).unwrap()
    }

    #[test]
    fn truncation_matches_the_one_at_a_time_rule() {
        // Simulate transformers' loop and compare with the closed form on every small case.
        let t = tiny();
        for a in 0..9usize {
            for b in 0..9usize {
                for max_length in 3..14usize {
                    let ta = "好".repeat(a);
                    let tb = "书".repeat(b);
                    let got = t.encode(&ta, Some(&tb), Some(max_length)).unwrap();
                    let (mut ea, mut eb) = (a, b);
                    while ea + eb + 3 > max_length {
                        if ea > eb {
                            ea -= 1
                        } else {
                            eb -= 1
                        }
                    }
                    let count = |id| got.input_ids.iter().filter(|&&x| x == id).count();
                    assert_eq!(
                        (count(5), count(6)),
                        (ea, eb),
                        "a={a} b={b} max={max_length}"
                    );
                }
            }
        }
    }

    #[test]
    fn batch_pads_with_mask() {
        let t = tiny();
        let b = t
            .encode_batch(
                &[("很好看", None), ("书", Some("ab"))],
                None,
                Padding::Longest,
            )
            .unwrap();
        assert_eq!((b.batch_size, b.seq_len), (2, 6));
        assert_eq!(b.input_ids, vec![2, 7, 5, 8, 3, 0, 2, 6, 3, 9, 10, 3]);
        assert_eq!(b.token_type_ids, vec![0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1]);
        assert_eq!(b.attention_mask, vec![1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1]);
        assert!(t
            .encode_batch(&[("很好看", None)], None, Padding::Fixed(3))
            .is_err());
    }

    #[test]
    fn padding_to_a_multiple_rounds_up_the_longest_and_stops_at_the_limit() {
        let mut t = tiny();
        let texts = [("很好看", None), ("书", Some("ab"))]; // 5 and 6 tokens
        let seq_len = |t: &BertTokenizer| {
            let b = t.encode_batch(&texts, None, Padding::Longest).unwrap();
            // Real tokens first, then padding: the mask counts the real ones.
            let real: Vec<u32> = b
                .attention_mask
                .chunks(b.seq_len)
                .map(|row| row.iter().sum())
                .collect();
            assert_eq!(real, [5, 6]);
            assert!(b
                .input_ids
                .chunks(b.seq_len)
                .all(|row| row[6..].iter().all(|&id| id == 0)));
            b.seq_len
        };
        assert_eq!(seq_len(&t), 6);
        // (multiple, limit, padded length): never past the limit, never below
        // the longest input, and a multiple of 1 is no rounding.
        for (multiple, limit, want) in [
            (4, 512, 8),
            (32, 512, 32),
            (32, 10, 10),
            (32, 4, 6),
            (1, 512, 6),
        ] {
            t.set_pad_to_multiple_of(multiple, limit);
            assert_eq!(seq_len(&t), want, "multiple {multiple}, limit {limit}");
        }
        // A fixed length is what it says.
        t.set_pad_to_multiple_of(32, 512);
        assert_eq!(
            t.encode_batch(&texts, None, Padding::Fixed(7))
                .unwrap()
                .seq_len,
            7
        );
    }

    #[test]
    fn too_small_max_length_is_an_error_not_a_panic() {
        let err = tiny().encode("好", Some("书"), Some(2)).unwrap_err();
        assert!(err.to_string().contains("max_length 2"), "{err}");
    }

    #[test]
    fn duplicate_and_missing_specials_are_refused() {
        let v: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "好", "好"]
            .map(String::from)
            .to_vec();
        assert!(BertTokenizer::from_vocab(&v, TokenizerConfig::default())
            .unwrap_err()
            .to_string()
            .contains("appears twice"));
        let v: Vec<String> = ["[PAD]", "[UNK]", "[CLS]"].map(String::from).to_vec();
        assert!(BertTokenizer::from_vocab(&v, TokenizerConfig::default())
            .unwrap_err()
            .to_string()
            .contains("[SEP]"));
    }

    #[test]
    fn char_vocab_counts_first_and_following_chars() {
        let v = build_char_vocab(
            ["好书 AB ab", "好 好", "书!"],
            &TokenizerConfig::default(),
            2,
            100,
        )
        .unwrap();
        // 好 x3, 书 x2, a x2, ##b x2; "!" once is dropped.
        assert_eq!(&v[5..], &["好", "##b", "a", "书"]);
    }

    #[test]
    fn final_sigma_lowercases_like_python() {
        let config = TokenizerConfig::default();
        assert_eq!(final_sigma("ΟΔΟΣ Σ", &config).unwrap(), "οδος σ");
        // The control character goes first, so the sigma is not word-final.
        assert_eq!(final_sigma("ΑΣ\u{7}Α", &config).unwrap(), "ασα");
        assert_eq!(final_sigma("好", &config).unwrap(), "好");
    }

    #[test]
    fn save_and_reload_gives_the_same_ids() {
        let t = tiny();
        let dir = std::env::temp_dir().join(format!("zhbert-tok-{}", std::process::id()));
        t.save(&dir).unwrap();
        let from_json = BertTokenizer::from_dir(&dir).unwrap();
        let from_vocab =
            BertTokenizer::from_vocab_file(dir.join("vocab.txt"), TokenizerConfig::default())
                .unwrap();
        for text in ["很好看的书", "AB b", ""] {
            let want = t.encode(text, None, None).unwrap();
            assert_eq!(from_json.encode(text, None, None).unwrap(), want);
            assert_eq!(from_vocab.encode(text, None, None).unwrap(), want);
        }
        fs::remove_dir_all(dir).ok();
    }
}
