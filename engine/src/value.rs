//! Attribute values of BUILD.toml targets and kiln.toml sections, with the byte spans
//! they came from, so every error can name file:line:column.
//!
//! Values are converted out of `toml_edit` once, so rules never see the TOML library.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use crate::error::{did_you_mean, Error, ErrorKind, LineIndex, Location, Result};

/// A parsed value and where it stands in its file.
#[derive(Debug, Clone)]
pub struct Spanned<T> {
    pub value: T,
    pub span: Range<usize>,
}

#[derive(Debug, Clone)]
pub enum Value {
    Str(String),
    Int(i64),
    Bool(bool),
    Float(f64),
    List(Vec<Spanned<Value>>),
    Table(Table),
}

impl Value {
    fn type_name(&self) -> &'static str {
        match self {
            Value::Str(_) => "a string",
            Value::Int(_) => "an integer",
            Value::Bool(_) => "a boolean",
            Value::Float(_) => "a number",
            Value::List(_) => "a list",
            Value::Table(_) => "a table",
        }
    }
}

/// A source file's text, shared by every table parsed from it.
#[derive(Debug)]
pub struct SourceFile {
    pub path: PathBuf,
    pub text: String,
    /// Made on the first location asked for: loading a file that holds no error costs
    /// nothing for locations.
    lines: OnceLock<LineIndex>,
}

impl SourceFile {
    pub fn new(path: &Path, text: String) -> SourceFile {
        SourceFile {
            path: path.to_path_buf(),
            text,
            lines: OnceLock::new(),
        }
    }

    pub fn location(&self, offset: usize) -> Location {
        let lines = self.lines.get_or_init(|| LineIndex::new(&self.text));
        lines.location(&self.path, &self.text, offset)
    }
}

/// A table in document order, with the span of each key and value.
#[derive(Debug, Clone)]
pub struct Table {
    pub file: Arc<SourceFile>,
    pub span: Range<usize>,
    pub entries: Vec<(Spanned<String>, Spanned<Value>)>,
}

impl Table {
    /// Parses a whole TOML file from its bytes: text that is not UTF-8 is an error at
    /// its first bad byte.
    pub fn parse_bytes(path: &Path, bytes: Vec<u8>) -> Result<Table> {
        let text = String::from_utf8(bytes).map_err(|e| {
            let at = e.utf8_error().valid_up_to();
            let byte = e.as_bytes()[at];
            Error::new(
                ErrorKind::Config,
                format!("invalid UTF-8 (byte 0x{byte:02x}): a TOML file is UTF-8 text"),
            )
            .at(Location::in_bytes(path, e.as_bytes(), at))
        })?;
        Table::parse_file(path, text)
    }

    /// Parses a whole TOML file.
    pub fn parse_file(path: &Path, text: String) -> Result<Table> {
        let doc = toml_edit::Document::parse(text.clone());
        let file = Arc::new(SourceFile::new(path, text));
        let doc = doc.map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start);
            // One line: toml_edit's messages may run over several.
            let message: Vec<&str> = e.message().lines().map(str::trim).collect();
            let message = message.into_iter().filter(|l| !l.is_empty());
            let message = message.collect::<Vec<_>>().join("; ");
            Error::new(ErrorKind::Config, format!("invalid TOML: {message}"))
                .at(file.location(offset))
        })?;
        Ok(convert_table(&file, doc.as_table(), 0..file.text.len()))
    }

    pub fn get(&self, key: &str) -> Option<&Spanned<Value>> {
        self.entries
            .iter()
            .find(|(k, _)| k.value == key)
            .map(|(_, v)| v)
    }

    pub fn location(&self, offset: usize) -> Location {
        self.file.location(offset)
    }

    /// An error at the value of `key` (or at the table if the key is absent).
    pub fn error_at(&self, key: &str, message: impl Into<String>) -> Error {
        let offset = self.get(key).map_or(self.span.start, |v| v.span.start);
        Error::new(ErrorKind::Config, message).at(self.location(offset))
    }

    /// Fails on the first key not in `allowed`, with a "did you mean" hint.
    pub fn check_keys(&self, allowed: &[&str], what: &str) -> Result<()> {
        for (key, _) in &self.entries {
            if !allowed.contains(&key.value.as_str()) {
                let mut err = Error::new(
                    ErrorKind::Config,
                    format!("unknown field `{}` in {what}", key.value),
                )
                .at(self.location(key.span.start));
                let hint = did_you_mean(&key.value, allowed.iter().copied())
                    .unwrap_or_else(|| format!("known fields: {}", allowed.join(", ")));
                err = err.hint(hint);
                return Err(err);
            }
        }
        Ok(())
    }

    fn type_error(&self, key: &str, v: &Spanned<Value>, want: &str) -> Error {
        Error::new(
            ErrorKind::Config,
            format!("`{key}` must be {want}, not {}", v.value.type_name()),
        )
        .at(self.location(v.span.start))
    }

    pub fn str(&self, key: &str) -> Result<Option<Spanned<String>>> {
        match self.get(key) {
            None => Ok(None),
            Some(Spanned {
                value: Value::Str(s),
                span,
            }) => Ok(Some(Spanned {
                value: s.clone(),
                span: span.clone(),
            })),
            Some(v) => Err(self.type_error(key, v, "a string")),
        }
    }

    pub fn required_str(&self, key: &str, what: &str) -> Result<Spanned<String>> {
        self.str(key)?.ok_or_else(|| {
            Error::new(ErrorKind::Config, format!("{what} needs `{key}`"))
                .at(self.location(self.span.start))
        })
    }

    pub fn bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(Spanned {
                value: Value::Bool(b),
                ..
            }) => Ok(Some(*b)),
            Some(v) => Err(self.type_error(key, v, "true or false")),
        }
    }

    pub fn int(&self, key: &str) -> Result<Option<i64>> {
        match self.get(key) {
            None => Ok(None),
            Some(Spanned {
                value: Value::Int(i),
                ..
            }) => Ok(Some(*i)),
            Some(v) => Err(self.type_error(key, v, "an integer")),
        }
    }

    /// A number, integer or not (absent = None).
    pub fn number(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(Spanned {
                value: Value::Float(f),
                ..
            }) => Ok(Some(*f)),
            Some(Spanned {
                value: Value::Int(i),
                ..
            }) => Ok(Some(*i as f64)),
            Some(v) => Err(self.type_error(key, v, "a number")),
        }
    }

    /// A list of strings (absent = empty).
    pub fn str_list(&self, key: &str) -> Result<Vec<Spanned<String>>> {
        let Some(v) = self.get(key) else {
            return Ok(Vec::new());
        };
        let Value::List(items) = &v.value else {
            return Err(self.type_error(key, v, "a list of strings"));
        };
        items
            .iter()
            .map(|item| match &item.value {
                Value::Str(s) => Ok(Spanned {
                    value: s.clone(),
                    span: item.span.clone(),
                }),
                _ => Err(self.type_error(key, item, "a list of strings")),
            })
            .collect()
    }

    /// A table of strings (absent = empty), in document order.
    pub fn str_map(&self, key: &str) -> Result<Vec<(Spanned<String>, Spanned<String>)>> {
        let Some(v) = self.get(key) else {
            return Ok(Vec::new());
        };
        let Value::Table(t) = &v.value else {
            return Err(self.type_error(key, v, "a table of strings"));
        };
        t.entries
            .iter()
            .map(|(k, item)| match &item.value {
                Value::Str(s) => Ok((
                    k.clone(),
                    Spanned {
                        value: s.clone(),
                        span: item.span.clone(),
                    },
                )),
                _ => Err(self.type_error(&k.value, item, "a string")),
            })
            .collect()
    }

    /// This table's own entries as strings (e.g. kiln.toml's `[stamp]`).
    pub fn str_map_self(&self) -> Result<std::collections::BTreeMap<String, String>> {
        self.entries
            .iter()
            .map(|(k, v)| match &v.value {
                Value::Str(s) => Ok((k.value.clone(), s.clone())),
                _ => Err(self.type_error(&k.value, v, "a string")),
            })
            .collect()
    }

    /// A sub-table (absent = None).
    pub fn table(&self, key: &str) -> Result<Option<&Table>> {
        match self.get(key) {
            None => Ok(None),
            Some(Spanned {
                value: Value::Table(t),
                ..
            }) => Ok(Some(t)),
            Some(v) => Err(self.type_error(key, v, "a table")),
        }
    }

    /// A list of tables (absent = empty).
    pub fn table_list(&self, key: &str) -> Result<Vec<&Table>> {
        let Some(v) = self.get(key) else {
            return Ok(Vec::new());
        };
        let Value::List(items) = &v.value else {
            return Err(self.type_error(key, v, "a list of tables"));
        };
        items
            .iter()
            .map(|item| match &item.value {
                Value::Table(t) => Ok(t),
                _ => Err(self.type_error(key, item, "a list of tables")),
            })
            .collect()
    }
}

fn convert_table(file: &Arc<SourceFile>, table: &toml_edit::Table, span: Range<usize>) -> Table {
    let span = table.span().unwrap_or(span);
    let entries = table
        .iter()
        .map(|(k, item)| {
            let key_span = table.key(k).and_then(|k| k.span()).unwrap_or(span.clone());
            let key = Spanned {
                value: k.to_string(),
                span: key_span.clone(),
            };
            (key, convert_item(file, item, key_span))
        })
        .collect();
    Table {
        file: file.clone(),
        span,
        entries,
    }
}

fn convert_item(
    file: &Arc<SourceFile>,
    item: &toml_edit::Item,
    fallback: Range<usize>,
) -> Spanned<Value> {
    use toml_edit::Item;
    match item {
        Item::Table(t) => {
            let span = t.span().unwrap_or(fallback);
            Spanned {
                value: Value::Table(convert_table(file, t, span.clone())),
                span,
            }
        }
        Item::ArrayOfTables(a) => {
            let span = a.span().unwrap_or(fallback);
            let items = a
                .iter()
                .map(|t| {
                    let s = t.span().unwrap_or(span.clone());
                    Spanned {
                        value: Value::Table(convert_table(file, t, s.clone())),
                        span: s,
                    }
                })
                .collect();
            Spanned {
                value: Value::List(items),
                span,
            }
        }
        Item::Value(v) => convert_value(file, v, fallback),
        Item::None => Spanned {
            value: Value::Table(Table {
                file: file.clone(),
                span: fallback.clone(),
                entries: Vec::new(),
            }),
            span: fallback,
        },
    }
}

fn convert_value(
    file: &Arc<SourceFile>,
    v: &toml_edit::Value,
    fallback: Range<usize>,
) -> Spanned<Value> {
    use toml_edit::Value as V;
    let span = v.span().unwrap_or(fallback);
    let value = match v {
        V::String(s) => Value::Str(s.value().clone()),
        V::Integer(i) => Value::Int(*i.value()),
        V::Float(f) => Value::Float(*f.value()),
        V::Boolean(b) => Value::Bool(*b.value()),
        V::Datetime(d) => Value::Str(d.value().to_string()),
        V::Array(a) => Value::List(
            a.iter()
                .map(|item| convert_value(file, item, span.clone()))
                .collect(),
        ),
        V::InlineTable(t) => Value::Table(Table {
            file: file.clone(),
            span: span.clone(),
            entries: t
                .iter()
                .map(|(k, item)| {
                    let key_span = t.key(k).and_then(|k| k.span()).unwrap_or(span.clone());
                    (
                        Spanned {
                            value: k.to_string(),
                            span: key_span.clone(),
                        },
                        convert_value(file, item, key_span),
                    )
                })
                .collect(),
        }),
    };
    Spanned { value, span }
}
