//! Every Debezium form in `fixtures/debezium/`, read and mapped.

use bytes::Bytes;
use serde_json::json;

use super::envelope::{parse, Change, EnvelopeError, Fields, Row};
use super::mapping::{CdcMapping, Kind, Output};
use crate::log::{Header, Record};
use crate::messages::{Draft, Recipient};

fn fixture(name: &str) -> Bytes {
    let path = format!("{}/fixtures/debezium/{name}", env!("CARGO_MANIFEST_DIR"));
    Bytes::from(std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
}

fn record(value: Option<Bytes>) -> Record {
    Record {
        key: None,
        value,
        headers: Vec::new(),
        timestamp_ms: 0,
    }
}

fn outbox(name: &str, key: &str, id: &str) -> Record {
    Record {
        key: Some(Bytes::copy_from_slice(key.as_bytes())),
        value: Some(fixture(name)),
        headers: vec![Header {
            key: "id".into(),
            value: Some(Bytes::copy_from_slice(id.as_bytes())),
        }],
        timestamp_ms: 0,
    }
}

fn messages(msg_id_field: Option<&str>) -> CdcMapping {
    let mut fields: std::collections::BTreeMap<String, String> = [
        ("sender_id", "sender_id"),
        ("receiver_id", "receiver_id"),
        ("group_id", "group_id"),
        ("content", "content"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    if let Some(f) = msg_id_field {
        fields.insert("msg_id".into(), f.into());
    }
    CdcMapping {
        topic: "pg.public.messages".into(),
        kind: Kind::ChatMessage,
        fields,
        table: Some("messages".into()),
        notification_type: None,
        enabled: true,
        retry: None,
    }
}

fn insert(r: &Record) -> (Row<'_>, Option<String>) {
    match parse(r) {
        Ok(Change::Insert { row, table }) => (row, table.map(String::from)),
        other => panic!("expected an insert, got {other:?}"),
    }
}

#[test]
fn postgres_inserts_with_and_without_the_schema_wrapper() {
    let r = record(Some(fixture("pg_insert.json")));
    let (row, table) = insert(&r);
    assert_eq!(table.as_deref(), Some("messages"));
    assert_eq!(
        messages(Some("id")).map(&row, "pos").unwrap(),
        Output::Message(Draft {
            msg_id: "1001".into(),
            sender_id: "alice".into(),
            to: Recipient::User("bob".into()),
            content: "hello from postgres".into(),
        })
    );
    let r = record(Some(fixture("pg_insert_schema.json")));
    let (row, _) = insert(&r);
    assert_eq!(
        messages(Some("id")).map(&row, "pos").unwrap(),
        Output::Message(Draft {
            msg_id: "1002".into(),
            sender_id: "alice".into(),
            to: Recipient::Group("team".into()),
            content: "hello team, with a schema".into(),
        })
    );
    // A snapshot read is a row that exists: taken like an insert.
    let r = record(Some(fixture("pg_snapshot_read.json")));
    let (row, _) = insert(&r);
    assert_eq!(row.to_map()["content"], "from the snapshot");
}

#[test]
fn updates_deletes_and_tombstones_are_passed_over() {
    for (name, what) in [
        ("pg_update.json", "update"),
        ("pg_delete.json", "delete"),
        ("flattened_deleted.json", "delete"),
    ] {
        assert_eq!(
            parse(&record(Some(fixture(name)))),
            Ok(Change::Other { what }),
            "{name}"
        );
    }
    assert_eq!(
        parse(&record(None)),
        Ok(Change::Other { what: "tombstone" })
    );
    // The JSON converter with schemas writes a null payload for a tombstone.
    assert_eq!(
        parse(&record(Some(Bytes::from_static(
            br#"{"schema":null,"payload":null}"#
        )))),
        Ok(Change::Other { what: "tombstone" })
    );
}

#[test]
fn mongodb_documents_arrive_as_extended_json_text() {
    let r = record(Some(fixture("mongo_insert.json")));
    let (row, table) = insert(&r);
    assert_eq!(table.as_deref(), Some("messages"));
    assert_eq!(row.to_map()["_id"], "6741a2f0c2a4b35e1c9d0a11");
    assert_eq!(row.to_map()["seq"], "42");
    let output = messages(Some("_id")).map(&row, "pos").unwrap();
    assert_eq!(
        output,
        Output::Message(Draft {
            msg_id: "6741a2f0c2a4b35e1c9d0a11".into(),
            sender_id: "alice".into(),
            to: Recipient::User("bob".into()),
            content: "hello from mongo".into(),
        })
    );
}

#[test]
fn flattened_rows_are_read_as_they_are() {
    let r = record(Some(fixture("flattened.json")));
    let (row, table) = insert(&r);
    assert_eq!(table.as_deref(), Some("messages"));
    let Output::Message(d) = messages(Some("id")).map(&row, "pos").unwrap() else {
        panic!("a message");
    };
    assert_eq!((&*d.msg_id, &*d.sender_id), ("1003", "bob"));
}

#[test]
fn outbox_events_carry_key_and_event_id() {
    let mapping = CdcMapping {
        topic: "outbox.event.order".into(),
        kind: Kind::Notification,
        fields: [("user_id".to_string(), "user_id".to_string())].into(),
        table: None,
        notification_type: Some("purchase".into()),
        enabled: true,
        retry: None,
    };
    // The JSON converter writes the key as a quoted string.
    let r = outbox(
        "outbox_string.json",
        "\"7\"",
        "4d47e190-0402-4048-bc2c-89dd54343cdc",
    );
    let (row, _) = insert(&r);
    assert_eq!(row.to_map()["__aggregateid"], "7");
    assert_eq!(
        mapping.map(&row, "pos").unwrap(),
        Output::Notification {
            id: "4d47e190-0402-4048-bc2c-89dd54343cdc".into(),
            user: "bob".into(),
            notification_type: "purchase".into(),
            payload: json!({"user_id": "bob", "order_id": 7, "total": 39.98, "status": "PAID"}),
        }
    );
    let r = outbox("outbox_expanded.json", "8", "e-8");
    let (row, _) = insert(&r);
    let Output::Notification { id, payload, .. } = mapping.map(&row, "pos").unwrap() else {
        panic!("a notification");
    };
    assert_eq!(id, "e-8");
    assert_eq!(payload["carrier"], "DHL");
    // Extra fields placed in the envelope come along under the prefix.
    let mut r = outbox("outbox_string.json", "9", "e-9");
    r.value = Some(Bytes::from_static(
        br#"{"payload":"{\"user_id\":\"carol\"}","eventType":"OrderCreated"}"#,
    ));
    let (row, _) = insert(&r);
    assert_eq!(row.to_map()["__eventType"], "OrderCreated");
    assert_eq!(row.to_map()["user_id"], "carol");
}

#[test]
fn without_an_id_the_position_names_the_event() {
    let r = record(Some(fixture("pg_insert.json")));
    let (row, _) = insert(&r);
    let Output::Message(d) = messages(None).map(&row, "cdc:t:0:17").unwrap() else {
        panic!("a message");
    };
    assert_eq!(&*d.msg_id, "cdc:t:0:17");
}

#[test]
fn malformed_and_unmappable_events_say_why() {
    for (bytes, expected) in [
        (&b"not json"[..], "not JSON"),
        (br#"{"op":"x","after":{}}"#, "unknown op"),
        (br#"{"op":"c","after":null}"#, "no `after`"),
        (br#"{"op":"c","after":"[1,2]"}"#, "not a JSON object"),
        (b"[1,2,3]", "neither"),
        (b"42", "neither"),
    ] {
        let err = parse(&record(Some(Bytes::copy_from_slice(bytes)))).unwrap_err();
        assert!(
            err.to_string().contains(expected),
            "{:?}: {err}",
            String::from_utf8_lossy(bytes)
        );
    }
    assert!(matches!(
        parse(&record(Some(Bytes::from_static(b"\"not an object\"")))),
        Err(EnvelopeError::BadPayload(_))
    ));
    let mapping = messages(Some("id"));
    let row = |v: serde_json::Value| v.as_object().unwrap().clone();
    let err = mapping
        .map(
            &row(json!({"id": 1, "receiver_id": "b", "content": "x"})),
            "p",
        )
        .unwrap_err();
    assert!(err.contains("sender_id"), "{err}");
    let err = mapping
        .map(
            &row(json!({"id": 1, "sender_id": "a", "content": "x"})),
            "p",
        )
        .unwrap_err();
    assert!(err.contains("neither a receiver nor a group"), "{err}");
    let err = mapping
        .map(
            &row(json!({"id": 1, "sender_id": "a", "receiver_id": "b", "content": {"x": 1}})),
            "p",
        )
        .unwrap_err();
    assert!(err.contains("content"), "{err}");
    let notifications = CdcMapping {
        kind: Kind::Notification,
        fields: Default::default(),
        ..messages(None)
    };
    let err = notifications
        .map(
            &row(json!({"user_id": "a", "notification_type": "party"})),
            "p",
        )
        .unwrap_err();
    assert!(err.contains("not one of"), "{err}");
}

#[test]
fn configuration_mistakes_are_caught_when_read() {
    let mut m = messages(None);
    m.fields.insert("reciever_id".into(), "x".into());
    assert!(m.validate().unwrap_err().contains("reciever_id"));
    let m = CdcMapping {
        kind: Kind::Notification,
        fields: Default::default(),
        notification_type: Some("party".into()),
        ..messages(None)
    };
    assert!(m.validate().unwrap_err().contains("party"));
    assert!(messages(Some("id")).validate().is_ok());
}
