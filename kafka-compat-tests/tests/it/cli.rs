//! The `chorus` CLI against a running `chorus serve`: every command, checked by its output
//! and exit code, with librdkafka reading what the CLI wrote and what a reset left behind.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::Duration;

use rdkafka::message::{Headers, Message};
use tokio::io::AsyncWriteExt;

use crate::clients::{chorus_binary, Broker};

/// What one `chorus` command did.
#[derive(Debug)]
struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Ran {
    /// Stdout, after checking the command succeeded.
    fn ok(self) -> String {
        assert_eq!(
            self.code, 0,
            "command failed:\n{}\n{}",
            self.stdout, self.stderr
        );
        self.stdout
    }

    /// Stderr, after checking the command failed with `code`.
    fn failed(self, code: i32) -> String {
        assert_eq!(
            self.code, code,
            "unexpected exit:\n{}\n{}",
            self.stdout, self.stderr
        );
        self.stderr
    }

    fn json(self) -> serde_json::Value {
        let out = self.ok();
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
    }
}

/// Runs `chorus ARGS --bootstrap-server B` with `stdin`, within 60 s.
async fn chorus(broker: &Broker, args: &[&str], stdin: &str) -> Ran {
    let mut cmd = tokio::process::Command::new(chorus_binary());
    cmd.args(args)
        .args(["--bootstrap-server", &broker.bootstrap()])
        .env_remove("CHORUS_BOOTSTRAP_SERVER")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("run chorus");
    let mut input = child.stdin.take().expect("stdin");
    input
        .write_all(stdin.as_bytes())
        .await
        .expect("write stdin");
    drop(input);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("chorus {args:?} ran over 60 s"))
        .expect("chorus output");
    Ran {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn ok(broker: &Broker, args: &[&str]) -> String {
    chorus(broker, args, "").await.ok()
}

async fn fails(broker: &Broker, args: &[&str], code: i32) -> String {
    chorus(broker, args, "").await.failed(code)
}

async fn run_json(broker: &Broker, args: &[&str]) -> serde_json::Value {
    chorus(broker, args, "").await.json()
}

/// The rows of a table (header skipped), split into columns.
fn rows(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .skip_while(|l| {
            !l.starts_with("GROUP") && !l.starts_with("TOPIC") && !l.starts_with("PARTITION")
        })
        .skip(1)
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_topics_create_list_describe_alter_delete() {
    let broker = Broker::start().await;
    let out = ok(
        &broker,
        &[
            "topics",
            "create",
            "cli-topics",
            "--partitions",
            "3",
            "--config",
            "retention.ms=3600000",
        ],
    )
    .await;
    assert_eq!(out, "Created topic cli-topics.\n");
    let listed = ok(&broker, &["topics", "list"]).await;
    assert!(
        rows(&listed).contains(&vec!["cli-topics".to_string(), "3".to_string()]),
        "{listed}"
    );
    assert!(
        !listed.contains("__consumer_offsets"),
        "internal topics are hidden by default"
    );

    let described = ok(&broker, &["topics", "describe", "cli-topics"]).await;
    assert!(described.contains("PartitionCount: 3"), "{described}");
    assert!(
        described.contains("Configs: retention.ms=3600000"),
        "{described}"
    );
    assert_eq!(rows(&described).len(), 3);

    ok(
        &broker,
        &[
            "topics",
            "alter",
            "cli-topics",
            "--partitions",
            "5",
            "--config",
            "cleanup.policy=compact",
            "--delete-config",
            "retention.ms",
        ],
    )
    .await;
    let json = run_json(
        &broker,
        &["topics", "describe", "cli-topics", "--output", "json"],
    )
    .await;
    assert_eq!(json["partitions"].as_array().unwrap().len(), 5);
    assert_eq!(
        json["configs"],
        serde_json::json!({"cleanup.policy": "compact"})
    );

    let err = fails(&broker, &["topics", "create", "cli-topics"], 1).await;
    assert!(err.contains("TopicAlreadyExists"), "{err}");
    ok(
        &broker,
        &["topics", "create", "cli-topics", "--if-not-exists"],
    )
    .await;
    let err = fails(
        &broker,
        &["topics", "alter", "cli-topics", "--partitions", "2"],
        1,
    )
    .await;
    assert!(err.contains("InvalidPartitions"), "{err}");

    let out = ok(&broker, &["topics", "delete", "cli-topics"]).await;
    assert_eq!(out, "Deleted topic cli-topics.\n");
    let err = fails(&broker, &["topics", "describe", "cli-topics"], 1).await;
    assert!(err.contains("unknown topic cli-topics"), "{err}");
    let err = fails(&broker, &["topics", "delete", "cli-topics"], 1).await;
    assert!(err.contains("unknown topic cli-topics"), "{err}");
    let all = run_json(
        &broker,
        &["topics", "list", "--output", "json", "--include-internal"],
    )
    .await;
    let names: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"__consumer_offsets"), "{names:?}");
    assert!(!names.contains(&"cli-topics"), "{names:?}");
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_produce_consume_and_offsets() {
    let broker = Broker::start().await;
    ok(&broker, &["topics", "create", "lines", "--partitions", "2"]).await;
    let out = chorus(
        &broker,
        &[
            "produce",
            "lines",
            "--key-separator",
            ":",
            "--header",
            "src=cli",
            "--partition",
            "1",
        ],
        "a:1\nb:2\nc:3\n",
    )
    .await;
    assert!(out.stderr.contains("Produced 3 records"), "{out:?}");
    let printed = ok(
        &broker,
        &[
            "consume",
            "lines",
            "--from-beginning",
            "--max-messages",
            "3",
            "--format",
            "%p:%o %k=%v %h\\n",
        ],
    )
    .await;
    assert_eq!(
        printed,
        "1:0 a=1 src=cli\n1:1 b=2 src=cli\n1:2 c=3 src=cli\n"
    );

    // librdkafka reads the same records, headers and all.
    let seen = crate::groups_rdkafka::read(&broker.bootstrap(), "lines", 1, 3).await;
    assert_eq!(seen[0].key(), Some(&b"a"[..]));
    assert_eq!(seen[2].payload(), Some(&b"3"[..]));
    let h = seen[0].headers().expect("headers");
    assert_eq!((h.get(0).key, h.get(0).value), ("src", Some(&b"cli"[..])));

    // A bulk, compressed produce, spread over both partitions, read back to the end.
    let bulk: String = (0..1000).map(|i| format!("line-{i}\n")).collect();
    for codec in ["gzip", "snappy", "lz4", "zstd"] {
        chorus(
            &broker,
            &[
                "produce",
                "lines",
                "--compression",
                codec,
                "--batch-size",
                "100",
            ],
            &bulk,
        )
        .await
        .ok();
    }
    let json = ok(
        &broker,
        &[
            "consume",
            "lines",
            "--from-beginning",
            "--exit-at-end",
            "--output",
            "json",
        ],
    )
    .await;
    let records: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 4003);
    let partitions: BTreeSet<i64> = records
        .iter()
        .map(|r| r["partition"].as_i64().unwrap())
        .collect();
    assert_eq!(partitions, BTreeSet::from([0, 1]));

    let offsets = ok(&broker, &["offsets", "lines"]).await;
    let table = rows(&offsets);
    let latest: i64 = table.iter().map(|r| r[3].parse::<i64>().unwrap()).sum();
    assert_eq!(latest, 4003, "{offsets}");
    assert!(table.iter().all(|r| r[2] == "0"), "{offsets}");
    // Nothing is newer than the future: the offset at that time is the end.
    let future = run_json(
        &broker,
        &[
            "offsets",
            "lines",
            "--time",
            "2100-01-01T00:00:00Z",
            "--output",
            "json",
        ],
    )
    .await;
    for p in future.as_array().unwrap() {
        assert_eq!(p["offset_at_time"], p["latest"]);
    }
    let past = run_json(
        &broker,
        &["offsets", "lines", "--time", "0", "--output", "json"],
    )
    .await;
    for p in past.as_array().unwrap() {
        assert_eq!(p["offset_at_time"], p["earliest"]);
    }

    let err = chorus(&broker, &["produce", "missing"], "x\n")
        .await
        .failed(1);
    assert!(err.contains("unknown topic missing"), "{err}");
    let err = fails(&broker, &["consume", "lines", "--partition", "9"], 1).await;
    assert!(err.contains("unknown partition lines-9"), "{err}");
    broker.stop().await;
}

/// `groups describe G --output json`: committed offset per partition.
async fn committed(broker: &Broker, group: &str) -> Vec<(i64, Option<i64>)> {
    let json = chorus(
        broker,
        &["groups", "describe", group, "--output", "json"],
        "",
    )
    .await
    .json();
    json["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["partition"].as_i64().unwrap(),
                p["current_offset"].as_i64(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_groups_describe_reset_delete() {
    let broker = Broker::start().await;
    ok(&broker, &["topics", "create", "work", "--partitions", "2"]).await;
    let lines: String = (0..10).map(|i| format!("job-{i}\n")).collect();
    // One line per request, so the unkeyed lines alternate between the partitions.
    chorus(&broker, &["produce", "work", "--batch-size", "1"], &lines)
        .await
        .ok();
    let read = ok(
        &broker,
        &[
            "consume",
            "work",
            "--group",
            "crew",
            "--from-beginning",
            "--exit-at-end",
        ],
    )
    .await;
    assert_eq!(read.lines().count(), 10, "{read}");

    let listed = ok(&broker, &["groups", "list"]).await;
    assert!(
        rows(&listed)
            .iter()
            .any(|r| r[0] == "crew" && r[1] == "Empty"),
        "{listed}"
    );
    let described = ok(&broker, &["groups", "describe", "crew"]).await;
    assert!(described.contains("has no active members"), "{described}");
    let table = rows(&described);
    assert_eq!(table.len(), 2, "{described}");
    for r in &table {
        assert_eq!(
            (&r[1][..], &r[3][..], &r[4][..], &r[5][..]),
            ("work", "5", "5", "0"),
            "{described}"
        );
    }
    assert_eq!(
        committed(&broker, "crew").await,
        [(0, Some(5)), (1, Some(5))]
    );

    // Dry run by default: the plan, and nothing changes.
    let plan = chorus(
        &broker,
        &[
            "groups",
            "reset-offsets",
            "crew",
            "--topic",
            "work",
            "--to-earliest",
        ],
        "",
    )
    .await;
    assert!(plan.stderr.contains("Dry run"), "{plan:?}");
    let planned = rows(&plan.stdout);
    assert!(
        planned.iter().all(|r| r[3] == "5" && r[4] == "0"),
        "{planned:?}"
    );
    assert_eq!(
        committed(&broker, "crew").await,
        [(0, Some(5)), (1, Some(5))]
    );

    ok(
        &broker,
        &[
            "groups",
            "reset-offsets",
            "crew",
            "--topic",
            "work",
            "--to-earliest",
            "--execute",
        ],
    )
    .await;
    assert_eq!(
        committed(&broker, "crew").await,
        [(0, Some(0)), (1, Some(0))]
    );
    // What a consumer of the group then reads: everything again, from offset 0.
    let again = crate::groups_rdkafka::read_as_group(&broker.bootstrap(), "work", "crew", 10).await;
    let firsts: BTreeSet<(i32, i64)> = again.iter().filter(|(_, o)| *o == 0).copied().collect();
    assert_eq!(firsts, BTreeSet::from([(0, 0), (1, 0)]));
    assert_eq!(again.len(), 10);

    for (args, expect) in [
        (vec!["--topic", "work", "--to-offset", "3"], [3, 3]),
        (vec!["--topic", "work:1", "--shift-by", "1"], [3, 4]),
        (vec!["--all-topics", "--shift-by", "-10"], [0, 0]),
        (
            vec![
                "--topic",
                "work",
                "--to-datetime",
                "2100-01-01T00:00:00.000",
            ],
            [5, 5],
        ),
        (vec!["--topic", "work", "--by-duration", "PT1H"], [0, 0]),
        (vec!["--all-topics", "--to-latest"], [5, 5]),
    ] {
        let mut full = vec!["groups", "reset-offsets", "crew", "--execute"];
        full.extend(&args);
        chorus(&broker, &full, "").await.ok();
        assert_eq!(
            committed(&broker, "crew").await,
            [(0, Some(expect[0])), (1, Some(expect[1]))],
            "after {args:?}"
        );
    }

    // A live member blocks resets, with a message that says so.
    let member = {
        let mut cmd = tokio::process::Command::new(chorus_binary());
        cmd.args(["consume", "work", "--group", "crew", "--max-messages", "1"])
            .args(["--bootstrap-server", &broker.bootstrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        cmd.spawn().expect("background consumer")
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let json = run_json(&broker, &["groups", "describe", "crew", "--output", "json"]).await;
        if json["members"].as_array().unwrap().len() == 1 && json["state"] == "Stable" {
            assert!(
                json["partitions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|p| p["consumer_id"].is_string()),
                "{json}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the consumer never joined: {json}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let err = fails(
        &broker,
        &[
            "groups",
            "reset-offsets",
            "crew",
            "--all-topics",
            "--to-earliest",
            "--execute",
        ],
        1,
    )
    .await;
    assert!(err.contains("group crew has 1 active member"), "{err}");
    let err = fails(&broker, &["groups", "delete", "crew"], 1).await;
    assert!(err.contains("NonEmptyGroup"), "{err}");
    // One more record lets the member finish; it leaves the group on its way out.
    chorus(&broker, &["produce", "work"], "last\n").await.ok();
    let status = tokio::time::timeout(Duration::from_secs(30), member.wait_with_output())
        .await
        .expect("the consumer exits after one record")
        .expect("consumer status");
    assert!(status.status.success());
    let members = ok(&broker, &["groups", "describe", "crew", "--members"]).await;
    assert!(members.contains("has no active members"), "{members}");

    let out = ok(
        &broker,
        &["groups", "delete-offsets", "crew", "--topic", "work:1"],
    )
    .await;
    assert_eq!(rows(&out), [["work", "1", "Successful"]]);
    assert_eq!(committed(&broker, "crew").await.len(), 1);
    let state = ok(&broker, &["groups", "describe", "crew", "--state"]).await;
    assert!(rows(&state)[0].contains(&"Empty".to_string()), "{state}");

    assert_eq!(
        ok(&broker, &["groups", "delete", "crew"]).await,
        "Deleted group crew.\n"
    );
    let err = fails(&broker, &["groups", "describe", "crew"], 1).await;
    assert!(err.contains("unknown group crew"), "{err}");
    let err = fails(&broker, &["groups", "delete", "crew"], 1).await;
    assert!(err.contains("unknown group crew"), "{err}");
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_reports_unreachable_brokers_and_bad_arguments() {
    let broker = Broker::start().await;
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let out = tokio::process::Command::new(chorus_binary())
        .args(["topics", "list", "--bootstrap-server", &closed.to_string()])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach a broker at"), "{err}");

    let usage = fails(
        &broker,
        &["groups", "reset-offsets", "g", "--to-earliest"],
        2,
    )
    .await;
    assert!(usage.contains("--topic"), "{usage}");
    let usage = fails(
        &broker,
        &["groups", "reset-offsets", "g", "--all-topics"],
        2,
    )
    .await;
    assert!(usage.contains("--to-earliest"), "{usage}");
    let usage = fails(
        &broker,
        &["consume", "t", "--offset", "1", "--from-beginning"],
        2,
    )
    .await;
    assert!(usage.contains("cannot be used with"), "{usage}");
    let err = fails(
        &broker,
        &[
            "groups",
            "reset-offsets",
            "g",
            "--all-topics",
            "--to-datetime",
            "yesterday",
        ],
        1,
    )
    .await;
    assert!(err.contains("YYYY-MM-DD"), "{err}");
    let err = fails(&broker, &["produce", "t", "--acks", "2"], 1).await;
    assert!(err.contains("--acks"), "{err}");
    let err = fails(
        &broker,
        &["topics", "create", "t", "--config", "novalue"],
        1,
    )
    .await;
    assert!(err.contains("KEY=VALUE"), "{err}");
    let err = fails(&broker, &["topics", "create", "bad/name"], 1).await;
    assert!(err.contains("InvalidTopicException"), "{err}");

    for command in [
        &["topics", "create"][..],
        &["topics", "describe"],
        &["groups", "describe"],
        &["groups", "reset-offsets"],
        &["offsets"],
        &["produce"],
        &["consume"],
    ] {
        let mut args = command.to_vec();
        args.push("--help");
        let help = chorus(&broker, &args, "").await.ok();
        assert!(
            help.contains("Example"),
            "{args:?} --help has no examples:\n{help}"
        );
    }
    broker.stop().await;
}
