//! kcat (librdkafka's command-line client): metadata, keyed idempotent produce with headers
//! in every codec, null values, consume with a format string, and a balanced consumer group whose
//! committed offsets survive a broker restart. kcat has no admin commands, so topics are
//! created with the chorus CLI.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::clients::{chorus_binary, Broker};

fn kcat() -> Option<&'static str> {
    let found = ["kcat", "kafkacat"].into_iter().find(|bin| {
        std::process::Command::new(bin)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    });
    if found.is_none() {
        // The README's test command installs kcat and sets CHORUS_REQUIRE_KCAT.
        assert!(
            std::env::var_os("CHORUS_REQUIRE_KCAT").is_none(),
            "kcat is required but not installed"
        );
        eprintln!("kcat is not installed; skipping the kcat checks");
    }
    found
}

/// Runs `program args` with `stdin`; returns stdout, failing the test on an error or
/// after 60 s.
async fn run(program: &std::path::Path, args: &[&str], stdin: &str) -> String {
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin.as_bytes()).await.expect("stdin");
    drop(input);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{} {args:?} ran over 60 s", program.display()))
        .expect("output");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{} {args:?} failed:\n{stdout}\n{}",
        program.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kcat_produces_in_every_codec_lists_and_consumes() {
    let Some(kcat) = kcat() else { return };
    let kcat = std::path::Path::new(kcat);
    let broker = Broker::start().await;
    let b = broker.bootstrap();
    let chorus = chorus_binary();
    run(
        &chorus,
        &[
            "topics",
            "create",
            "kcat-topic",
            "--partitions",
            "2",
            "--bootstrap-server",
            &b,
        ],
        "",
    )
    .await;
    let mut want = String::new();
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let lines = format!("{codec}-1:hello\n{codec}-2:world\n{codec}-null:\n");
        run(
            kcat,
            &[
                "-b",
                &b,
                "-t",
                "kcat-topic",
                "-p",
                "0",
                "-P",
                "-K",
                ":",
                "-Z",
                "-z",
                codec,
                "-H",
                "via=kcat",
                "-X",
                "enable.idempotence=true",
            ],
            &lines,
        )
        .await;
        // -Z sends the empty value as null, which -f prints as an empty %s with %S -1.
        want.push_str(&format!(
            "{codec}-1=hello(5) via=kcat\n{codec}-2=world(5) via=kcat\n{codec}-null=(-1) via=kcat\n"
        ));
    }
    let listing = run(kcat, &["-b", &b, "-L", "-t", "kcat-topic"], "").await;
    assert!(listing.contains("2 partitions"), "{listing}");
    assert!(listing.contains("leader 1"), "{listing}");
    let consumed = run(
        kcat,
        &[
            "-b",
            &b,
            "-t",
            "kcat-topic",
            "-p",
            "0",
            "-C",
            "-o",
            "beginning",
            "-e",
            "-f",
            "%k=%s(%S) %h\n",
        ],
        "",
    )
    .await;
    assert_eq!(consumed, want);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kcat_balanced_group_commits_survive_a_restart() {
    let Some(kcat) = kcat() else { return };
    let kcat = std::path::Path::new(kcat);
    let mut broker = Broker::start().await;
    let chorus = chorus_binary();
    let b = broker.bootstrap();
    run(
        &chorus,
        &[
            "topics",
            "create",
            "kcat-group",
            "--partitions",
            "3",
            "--bootstrap-server",
            &b,
        ],
        "",
    )
    .await;
    let lines: String = (0..30).map(|i| format!("k{i}:v{i}\n")).collect();
    run(
        kcat,
        &["-b", &b, "-t", "kcat-group", "-P", "-K", ":"],
        &lines,
    )
    .await;
    // A balanced consumer (-G) reads everything once and commits as it exits.
    let first = run(
        kcat,
        &[
            "-b",
            &b,
            "-G",
            "kcat-readers",
            "-o",
            "beginning",
            "-c",
            "30",
            "-f",
            "%s\n",
            "-X",
            "auto.commit.interval.ms=100",
            "kcat-group",
        ],
        "",
    )
    .await;
    let mut got: Vec<&str> = first.lines().collect();
    got.sort_unstable();
    got.dedup();
    assert_eq!(got.len(), 30, "{first}");

    broker.restart().await;
    let b = broker.bootstrap();
    let described = run(
        &chorus,
        &[
            "groups",
            "describe",
            "kcat-readers",
            "--output",
            "json",
            "--bootstrap-server",
            &b,
        ],
        "",
    )
    .await;
    let json: serde_json::Value = serde_json::from_str(&described).expect("json");
    let committed: i64 = json["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["current_offset"].as_i64().unwrap_or(0))
        .sum();
    assert_eq!(committed, 30, "{described}");
    run(
        kcat,
        &["-b", &b, "-t", "kcat-group", "-P", "-K", ":"],
        "new:after-restart\n",
    )
    .await;
    let next = run(
        kcat,
        &[
            "-b",
            &b,
            "-G",
            "kcat-readers",
            "-c",
            "1",
            "-f",
            "%s\n",
            "kcat-group",
        ],
        "",
    )
    .await;
    assert_eq!(next, "after-restart\n");
    broker.stop().await;
}
