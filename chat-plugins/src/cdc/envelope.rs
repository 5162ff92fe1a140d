//! Reading Debezium change events, whatever form they arrive in. The form is detected from
//! the event itself:
//!
//! - the JSON converter's `{"schema": .., "payload": ..}` wrapper is taken off first;
//! - a change event envelope (`op`, `before`, `after`, `source`, `ts_ms`) from the
//!   PostgreSQL connector (`after` is an object) or the MongoDB connector (`after` is a
//!   string of extended JSON);
//! - the outbox event router's output: the payload (a JSON string, or an object when the
//!   router expands it), keyed by the aggregate id, with the event id in the `id` header;
//! - the flattened row of the new-record-state extraction, with `__deleted` (and `__op`
//!   when configured);
//! - a tombstone (no value), which follows every delete.
//!
//! Only inserts (and snapshot reads) become rows; updates, deletes, truncates and
//! tombstones are recognised and passed over. Anything else is an error for the
//! dead-letter topic.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::log::Record;

/// Where a row's outbox metadata is put: `__aggregateid` (the record key), `__id` (the
/// event id header), and `__<header>` for every other header.
pub const OUTBOX_PREFIX: &str = "__";

#[derive(Debug, Clone, PartialEq)]
pub enum Change<'a> {
    /// A new row (insert, or a snapshot read), with the table or collection it came from
    /// when the event says.
    Insert {
        row: Row<'a>,
        table: Option<Cow<'a, str>>,
    },
    /// Something that is not an insert; `what` says which (for logs and metrics).
    Other { what: &'static str },
}

/// Why an event cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("the value is not JSON: {0}")]
    NotJson(String),
    #[error("unknown op {0:?}")]
    UnknownOp(String),
    #[error("the insert has no `after` row")]
    NoAfter,
    #[error("`after` is not a JSON object: {0}")]
    BadAfter(String),
    #[error("the outbox payload is not a JSON object: {0}")]
    BadPayload(String),
    #[error("the event is neither a Debezium envelope, an outbox event nor a flattened row")]
    Unrecognised,
}

/// An inserted row's fields, MongoDB extended JSON made plain (see [`plain_json`]).
#[derive(Debug, Clone)]
pub enum Row<'a> {
    /// Read in the same pass as the event, without building a tree: each field's name
    /// and value, in order (a later repeat of a name wins, as in a tree); text borrowed
    /// from the event where it has no escapes. The common form, a PostgreSQL-style
    /// envelope, is read like this.
    Fields(Vec<(Cow<'a, str>, Field<'a>)>),
    /// Every other form, read as a JSON tree.
    Tree(Map<String, Value>),
}

/// A field of a [`Row::Fields`] row.
#[derive(Debug, Clone)]
pub enum Field<'a> {
    Text(Cow<'a, str>),
    /// Anything but a string (objects and arrays as they were sent: not made plain yet).
    Value(Value),
}

impl Field<'_> {
    fn to_value(&self) -> Value {
        match self {
            Field::Text(t) => Value::String(t.to_string()),
            Field::Value(v) => plain_value(v.clone()),
        }
    }
}

impl<'de> Deserialize<'de> for Field<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldVisitor;
        impl<'de> Visitor<'de> for FieldVisitor {
            type Value = Field<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Field<'de>, E> {
                Ok(Field::Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Field<'de>, E> {
                Ok(Field::Text(Cow::Owned(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Field<'de>, E> {
                Ok(Field::Text(Cow::Owned(v)))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Field<'de>, E> {
                Ok(Field::Value(Value::Bool(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Field<'de>, E> {
                Ok(Field::Value(v.into()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Field<'de>, E> {
                Ok(Field::Value(v.into()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Field<'de>, E> {
                Ok(Field::Value(v.into()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Field<'de>, E> {
                Ok(Field::Value(Value::Null))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Field<'de>, A::Error> {
                Value::deserialize(de::value::MapAccessDeserializer::new(map)).map(Field::Value)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Field<'de>, A::Error> {
                Value::deserialize(de::value::SeqAccessDeserializer::new(seq)).map(Field::Value)
            }
        }
        deserializer.deserialize_any(FieldVisitor)
    }
}

/// What the mapping reads of a row.
pub trait Fields {
    /// A field as text: strings as they are (borrowed from the row when it holds them
    /// unescaped), numbers and booleans written out; `None` when the field is missing,
    /// null, an object or an array.
    fn text(&self, name: &str) -> Option<Cow<'_, str>>;
    /// A field's value.
    fn value(&self, name: &str) -> Option<Value>;
    /// Every field, as a tree.
    fn to_map(&self) -> Map<String, Value>;
}

impl Fields for Map<String, Value> {
    fn text(&self, name: &str) -> Option<Cow<'_, str>> {
        self.get(name).and_then(value_text)
    }

    fn value(&self, name: &str) -> Option<Value> {
        self.get(name).cloned()
    }

    fn to_map(&self) -> Map<String, Value> {
        self.clone()
    }
}

impl Row<'_> {
    /// A [`Row::Fields`] row's field (the last of that name).
    fn field(&self, name: &str) -> Option<&Field<'_>> {
        match self {
            Row::Fields(fields) => fields.iter().rev().find(|(n, _)| n == name).map(|f| &f.1),
            Row::Tree(_) => None,
        }
    }
}

impl Fields for Row<'_> {
    fn text(&self, name: &str) -> Option<Cow<'_, str>> {
        match self {
            Row::Fields(_) => match self.field(name)? {
                Field::Text(t) => Some(Cow::Borrowed(t)),
                other => value_text(&other.to_value()).map(|t| Cow::Owned(t.into_owned())),
            },
            Row::Tree(map) => map.text(name),
        }
    }

    fn value(&self, name: &str) -> Option<Value> {
        match self {
            Row::Fields(_) => self.field(name).map(Field::to_value),
            Row::Tree(map) => map.value(name),
        }
    }

    fn to_map(&self) -> Map<String, Value> {
        match self {
            Row::Fields(fields) => fields
                .iter()
                .map(|(name, field)| (name.to_string(), field.to_value()))
                .collect(),
            Row::Tree(map) => map.clone(),
        }
    }
}

/// Two rows are equal when their fields are (however each was read).
impl PartialEq for Row<'_> {
    fn eq(&self, other: &Row<'_>) -> bool {
        self.to_map() == other.to_map()
    }
}

/// Reads one record of a CDC topic.
pub fn parse(record: &Record) -> Result<Change<'_>, EnvelopeError> {
    let Some(bytes) = record.value.as_deref() else {
        return Ok(Change::Other { what: "tombstone" });
    };
    change_event(bytes).unwrap_or_else(|| parse_tree(bytes, record))
}

/// Reads an event of any form as a JSON tree.
fn parse_tree(bytes: &[u8], record: &Record) -> Result<Change<'static>, EnvelopeError> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| EnvelopeError::NotJson(e.to_string()))?;
    let value = unwrap_schema(value);
    let outbox = record.header("id").is_some();
    match value {
        Value::Null => Ok(Change::Other { what: "tombstone" }),
        Value::Object(map) if map.get("op").is_some_and(Value::is_string) => envelope(map),
        // The router's default: the payload as a JSON string.
        Value::String(text) => {
            let row = object_from_text(&text).map_err(EnvelopeError::BadPayload)?;
            Ok(Change::Insert {
                row: Row::Tree(with_outbox_metadata(row, record)),
                table: None,
            })
        }
        Value::Object(mut map) if outbox => {
            // Expanded payload, or a payload with extra fields placed in the envelope.
            let row = match map.remove("payload") {
                Some(payload) => {
                    let mut row = match payload {
                        Value::Object(o) => o,
                        Value::String(text) => {
                            object_from_text(&text).map_err(EnvelopeError::BadPayload)?
                        }
                        other => return Err(EnvelopeError::BadPayload(other.to_string())),
                    };
                    for (k, v) in map {
                        row.entry(format!("{OUTBOX_PREFIX}{k}")).or_insert(v);
                    }
                    row
                }
                None => map,
            };
            Ok(Change::Insert {
                row: Row::Tree(with_outbox_metadata(row, record)),
                table: None,
            })
        }
        Value::Object(map) => flattened(map),
        _ => Err(EnvelopeError::Unrecognised),
    }
}

/// The top level of an event object, read in one pass: the common form (a change event
/// envelope, with or without the converter's wrapper) is read from it without building a
/// tree of the event. Anything unexpected in the parts it reads (a `source` that is not
/// an object, an `op` that is not a string, ...) fails it, and the event is read as a
/// tree instead.
#[derive(Debug, Default)]
struct Top<'a> {
    op: Option<Cow<'a, str>>,
    after: Option<After<'a>>,
    source: Option<Source<'a>>,
    /// The wrapped envelope.
    payload: Option<Box<Top<'a>>>,
    schema: bool,
    /// Keys in the object, and whether one came twice.
    keys: usize,
    repeated: bool,
}

/// The envelope's `source`: only the table or collection is read.
#[derive(Debug, Deserialize)]
struct Source<'a> {
    #[serde(borrow)]
    table: Option<Name<'a>>,
    #[serde(borrow)]
    collection: Option<Name<'a>>,
}

/// The envelope's `after`.
#[derive(Debug)]
enum After<'a> {
    Row(Vec<(Cow<'a, str>, Field<'a>)>),
    /// The MongoDB connector sends the document as extended JSON text.
    Text(Cow<'a, str>),
    Null,
}

impl<'de> Deserialize<'de> for After<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AfterVisitor;
        impl<'de> Visitor<'de> for AfterVisitor {
            type Value = After<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object, a string or null")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<After<'de>, A::Error> {
                let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(Name(name)) = map.next_key()? {
                    fields.push((name, map.next_value()?));
                }
                Ok(After::Row(fields))
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<After<'de>, E> {
                Ok(After::Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<After<'de>, E> {
                Ok(After::Text(Cow::Owned(v.to_string())))
            }
            fn visit_unit<E: de::Error>(self) -> Result<After<'de>, E> {
                Ok(After::Null)
            }
        }
        deserializer.deserialize_any(AfterVisitor)
    }
}

impl<'de> Deserialize<'de> for Top<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TopVisitor;
        impl<'de> Visitor<'de> for TopVisitor {
            type Value = Top<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Top<'de>, A::Error> {
                let mut top = Top::default();
                while let Some(Name(key)) = map.next_key()? {
                    top.keys += 1;
                    let again = match key.as_ref() {
                        "op" => top.op.replace(map.next_value::<Name>()?.0).is_some(),
                        "after" => top.after.replace(map.next_value()?).is_some(),
                        "source" => top.source.replace(map.next_value()?).is_some(),
                        "payload" => top.payload.replace(map.next_value()?).is_some(),
                        "schema" => {
                            map.next_value::<IgnoredAny>()?;
                            std::mem::replace(&mut top.schema, true)
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                            false
                        }
                    };
                    top.repeated |= again;
                }
                Ok(top)
            }
        }
        deserializer.deserialize_map(TopVisitor)
    }
}

/// A string, borrowed from the text unless it has escapes. (Serde's own `Cow<str>`
/// always copies.)
#[derive(Debug)]
struct Name<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Name<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NameVisitor<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for NameVisitor<'a> {
            type Value = Name<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Name<'a>, E> {
                Ok(Name(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Name<'a>, E> {
                Ok(Name(Cow::Owned(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Name<'a>, E> {
                Ok(Name(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(NameVisitor(PhantomData))
    }
}

/// A change event envelope (directly or in the converter's wrapper) read in one pass;
/// `None` for every other form (and for oddities such as a repeated key), which
/// [`parse`] then reads as a JSON tree. Gives what [`parse`]'s general path would.
fn change_event(bytes: &[u8]) -> Option<Result<Change<'_>, EnvelopeError>> {
    let mut top: Top = serde_json::from_slice(bytes).ok()?;
    if top.repeated {
        return None;
    }
    // One wrapper is taken off, as `unwrap_schema` does.
    if top.schema && top.keys == 2 {
        top = *top.payload?;
        if top.repeated {
            return None;
        }
    }
    match top.op?.as_ref() {
        "c" | "r" => {}
        "u" => return Some(Ok(Change::Other { what: "update" })),
        "d" => return Some(Ok(Change::Other { what: "delete" })),
        "t" => return Some(Ok(Change::Other { what: "truncate" })),
        "m" => return Some(Ok(Change::Other { what: "message" })),
        other => return Some(Err(EnvelopeError::UnknownOp(other.to_string()))),
    }
    let table = top
        .source
        .and_then(|s| s.table.or(s.collection))
        .map(|Name(t)| t);
    let row = match top.after? {
        After::Row(fields) => Row::Fields(fields),
        After::Text(doc) => match object_from_text(&doc) {
            Ok(row) => Row::Tree(plain_json(row)),
            Err(e) => return Some(Err(EnvelopeError::BadAfter(e))),
        },
        After::Null => return Some(Err(EnvelopeError::NoAfter)),
    };
    Some(Ok(Change::Insert { row, table }))
}

/// Takes off the JSON converter's `{"schema", "payload"}` wrapper.
fn unwrap_schema(value: Value) -> Value {
    match value {
        Value::Object(mut map)
            if map.len() == 2 && map.contains_key("schema") && map.contains_key("payload") =>
        {
            map.remove("payload").unwrap_or(Value::Null)
        }
        other => other,
    }
}

/// A change event envelope.
fn envelope(mut map: Map<String, Value>) -> Result<Change<'static>, EnvelopeError> {
    let op = map.get("op").and_then(Value::as_str).unwrap_or_default();
    match op {
        "c" | "r" => {}
        "u" => return Ok(Change::Other { what: "update" }),
        "d" => return Ok(Change::Other { what: "delete" }),
        "t" => return Ok(Change::Other { what: "truncate" }),
        "m" => return Ok(Change::Other { what: "message" }),
        other => return Err(EnvelopeError::UnknownOp(other.to_string())),
    }
    let table = map.get("source").and_then(|s| {
        s.get("table")
            .filter(|t| !t.is_null())
            .or_else(|| s.get("collection"))
            .and_then(Value::as_str)
            .map(|t| Cow::Owned(t.to_string()))
    });
    let row = match map.remove("after") {
        Some(Value::Object(row)) => row,
        // The MongoDB connector sends the document as extended JSON text.
        Some(Value::String(text)) => object_from_text(&text).map_err(EnvelopeError::BadAfter)?,
        None | Some(Value::Null) => return Err(EnvelopeError::NoAfter),
        Some(other) => return Err(EnvelopeError::BadAfter(other.to_string())),
    };
    Ok(Change::Insert {
        row: Row::Tree(plain_json(row)),
        table,
    })
}

/// A row flattened by the new-record-state extraction.
fn flattened(row: Map<String, Value>) -> Result<Change<'static>, EnvelopeError> {
    let deleted = match row.get("__deleted") {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "true",
        _ => false,
    };
    if deleted {
        return Ok(Change::Other { what: "delete" });
    }
    match row.get("__op").and_then(Value::as_str) {
        None | Some("c" | "r") => {}
        Some("u") => return Ok(Change::Other { what: "update" }),
        Some("d") => return Ok(Change::Other { what: "delete" }),
        Some(other) => return Err(EnvelopeError::UnknownOp(other.to_string())),
    }
    let table = row
        .get("__table")
        .or_else(|| row.get("__collection"))
        .and_then(Value::as_str)
        .map(|t| Cow::Owned(t.to_string()));
    if row.is_empty() {
        return Err(EnvelopeError::Unrecognised);
    }
    Ok(Change::Insert {
        row: Row::Tree(plain_json(row)),
        table,
    })
}

fn object_from_text(text: &str) -> Result<Map<String, Value>, String> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(other) => Err(other.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// Adds the outbox router's metadata: the key as `__aggregateid`, headers as `__<name>`.
fn with_outbox_metadata(mut row: Map<String, Value>, record: &Record) -> Map<String, Value> {
    if let Some(key) = record
        .key
        .as_deref()
        .and_then(|k| std::str::from_utf8(k).ok())
    {
        // The JSON converter writes a string key with its quotes.
        let key = match serde_json::from_str::<Value>(key) {
            Ok(Value::String(s)) => s,
            _ => key.to_string(),
        };
        row.insert(format!("{OUTBOX_PREFIX}aggregateid"), Value::String(key));
    }
    for h in &record.headers {
        if let Some(v) = h.value.as_deref().and_then(|v| std::str::from_utf8(v).ok()) {
            // Header values written by the JSON header converter are quoted too.
            let v = match serde_json::from_str::<Value>(v) {
                Ok(Value::String(s)) => s,
                _ => v.to_string(),
            };
            row.insert(format!("{OUTBOX_PREFIX}{}", h.key), Value::String(v));
        }
    }
    plain_json(row)
}

/// MongoDB extended JSON to plain values: `{"$oid": "x"}` -> "x", `{"$numberLong": "5"}`
/// -> "5", `{"$date": ..}` -> its number, recursively.
fn plain_json(mut row: Map<String, Value>) -> Map<String, Value> {
    for v in row.values_mut() {
        if matches!(v, Value::Object(_) | Value::Array(_)) {
            *v = plain_value(std::mem::take(v));
        }
    }
    row
}

fn plain_value(v: Value) -> Value {
    match v {
        Value::Object(o) if o.len() == 1 && o.keys().all(|k| k.starts_with('$')) => {
            let inner = o.into_iter().next().map(|(_, v)| v).unwrap_or(Value::Null);
            plain_value(inner)
        }
        Value::Object(o) => Value::Object(plain_json(o)),
        Value::Array(a) => Value::Array(a.into_iter().map(plain_value).collect()),
        other => other,
    }
}

/// A value as text: strings as they are, numbers and booleans written out.
fn value_text(value: &Value) -> Option<Cow<'_, str>> {
    match value {
        Value::String(s) => Some(Cow::Borrowed(s)),
        Value::Number(n) => Some(Cow::Owned(n.to_string())),
        Value::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one-pass reading of change events gives what the tree reading gives, and is
    /// the one used for them.
    /// Field texts: strings as they are (borrowed from the event when they have no
    /// escapes, so the mapping copies each once, into the message), numbers and booleans
    /// written out, anything else none.
    #[test]
    fn field_texts_borrow_plain_strings_and_write_out_numbers_and_booleans() {
        let event = br#"{"op":"c","after":{"s":"plain","e":"a\"b","n":12,"f":2.5,"t":true,"z":null,"o":{}}}"#;
        let Some(Ok(Change::Insert { row, .. })) = change_event(event) else {
            panic!("a one-pass insert");
        };
        assert!(matches!(row.text("s"), Some(Cow::Borrowed("plain"))));
        assert_eq!(row.text("e").as_deref(), Some("a\"b"));
        assert_eq!(row.text("n").as_deref(), Some("12"));
        assert_eq!(row.text("f").as_deref(), Some("2.5"));
        assert_eq!(row.text("t").as_deref(), Some("true"));
        assert_eq!(row.text("z"), None);
        assert_eq!(row.text("o"), None);
        assert_eq!(row.text("missing"), None);
        let tree = row.to_map();
        assert!(matches!(tree.text("s"), Some(Cow::Borrowed("plain"))));
        assert_eq!(tree.text("t").as_deref(), Some("true"));
    }

    fn fixtures() -> Vec<Vec<u8>> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/debezium");
        std::fs::read_dir(dir)
            .expect("fixtures")
            .flatten()
            .filter(|f| f.path().extension().is_some_and(|e| e == "json"))
            .map(|f| std::fs::read(f.path()).expect("fixture"))
            .collect()
    }

    /// Reads `bytes` every way there is and checks they agree: whether the one pass took it,
    /// and whether it was a row read field by field.
    fn read_both_ways(bytes: &[u8]) -> (bool, bool) {
        let record = Record {
            key: None,
            value: Some(bytes::Bytes::copy_from_slice(bytes)),
            headers: Vec::new(),
            timestamp_ms: 0,
        };
        let text = String::from_utf8_lossy(bytes);
        let tree = parse_tree(bytes, &record);
        let mut field_row = false;
        let one_pass = change_event(bytes);
        // The one pass skips what it does not need without checking it; the tree checks
        // everything (UTF-8, surrogate escapes, numbers in range). An event damaged only in
        // a skipped part is read by the one pass, which production uses, and refused by the
        // tree; what both accept they must read alike.
        let lenient = matches!(tree, Err(EnvelopeError::NotJson(_)));
        if let Some(one_pass) = &one_pass {
            // Each field reads the same from the one pass as from the tree.
            if let (Ok(Change::Insert { row, .. }), Ok(Change::Insert { row: t, .. })) =
                (one_pass, &tree)
            {
                field_row = matches!(row, Row::Fields(_));
                for name in t.to_map().keys().map(String::as_str).chain(["missing"]) {
                    assert_eq!(row.text(name), t.text(name), "{name} of {text}");
                    assert_eq!(row.value(name), t.value(name), "{name} of {text}");
                }
            }
            if lenient {
                assert_eq!(&parse(&record), one_pass, "{text}");
            } else {
                assert_eq!(one_pass, &tree, "{text}");
            }
        }
        if one_pass.is_none() || !lenient {
            assert_eq!(parse(&record), tree, "{text}");
        }
        (one_pass.is_some(), field_row)
    }

    #[test]
    fn change_events_read_in_one_pass_as_from_the_tree() {
        let mut events = fixtures();
        for odd in [
            r#"{"op":"c","after":{"id":1},"source":{"table":null,"collection":"c"}}"#,
            r#"{"op":"c","after":{"id":{"$numberLong":"5"}},"source":{"collection":"c"}}"#,
            r#"{"op":"c","after":"{\"_id\":{\"$oid\":\"x\"}}","source":"odd"}"#,
            r#"{"op":"c","after":5}"#,
            r#"{"op":"c","after":[1, 2.50]}"#,
            r#"{"op":"c"}"#,
            r#"{"op":"c","after":null}"#,
            r#"{"op":"c","after":"[1]"}"#,
            r#"{"op":"z","after":{}}"#,
            r#"{"op":"\u0063","after":{"id":1}}"#,
            r#"{"op":7,"after":{"id":1}}"#,
            r#"{"op":"c","op":"u","after":{"id":1}}"#,
            r#"{"schema":{},"payload":{"op":"c","after":{"id":2}}}"#,
            r#"{"schema":{},"payload":{"op":"d","before":{"id":2}},"extra":1}"#,
            r#"{"schema":{},"payload":null}"#,
            r#"{"schema":{},"payload":{"schema":{},"payload":{"op":"c","after":{"id":3}}}}"#,
            r#"{"schema":{},"payload":{"op":"c","op":"c","after":{"id":3}}}"#,
            r#"{"op":"c","after":{"id":1}} trailing"#,
            r#"{"op":"c","after":{"con\u0074ent":"a\"b","id":1,"id":-0,"f":1e3,"g":2.50,"t":true,"n":null}}"#,
            r#"{"op":"c","after":{"id":{"$numberLong":"5"},"o":{"a":[1]},"l":[{"$oid":"x"}],"s":"\u00e9"}}"#,
        ] {
            events.push(odd.as_bytes().to_vec());
        }
        let (mut fast, mut field_rows) = (0, 0);
        for bytes in &events {
            let (one_pass, field_row) = read_both_ways(bytes);
            fast += usize::from(one_pass);
            field_rows += usize::from(field_row);
        }
        assert!(fast >= 15, "only {fast} events took the one-pass path");
        assert!(
            field_rows >= 6,
            "only {field_rows} rows were read in one pass"
        );
    }

    /// Change events come from any Kafka client, so damaged ones must be read without a
    /// panic, and the one pass must still agree with the tree on whatever it accepts.
    #[test]
    fn damaged_change_events_read_the_same_both_ways() {
        // xorshift64*, fixed seed: a failure repeats.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_f491_4f6c_dd1d) as usize
        };
        const PIECES: &[&[u8]] = &[
            b"\"",
            b"\\",
            b"{",
            b"}",
            b"[",
            b"]",
            b",",
            b":",
            b"null",
            b"-0",
            b"1e999",
            b"\\u0000",
            b"\\ud800",
            b"\xff",
            b"\"op\":\"c\"",
            b"{\"$numberLong\":\"9\"}",
        ];
        let (mut mutants, mut one_pass) = (0, 0);
        for event in fixtures() {
            for _ in 0..1000 {
                let mut bytes = event.clone();
                for _ in 0..1 + next() % 2 {
                    let at = next() % bytes.len().max(1);
                    match next() % 4 {
                        0 => bytes.truncate(at),
                        1 if at < bytes.len() => bytes[at] = next() as u8,
                        2 if at < bytes.len() => {
                            bytes.remove(at);
                        }
                        _ => {
                            let piece = PIECES[next() % PIECES.len()];
                            bytes.splice(at..at, piece.iter().copied());
                        }
                    }
                }
                one_pass += usize::from(read_both_ways(&bytes).0);
                mutants += 1;
            }
        }
        // Enough of the damage keeps the event readable to test the one pass, not just the
        // refusals.
        assert!(
            one_pass * 10 >= mutants,
            "only {one_pass} of {mutants} mutants took the one-pass path"
        );
    }
}
