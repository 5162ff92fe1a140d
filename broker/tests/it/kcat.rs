//! kcat (librdkafka's command-line client) against the broker, when it is installed.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::common::*;

fn kcat() -> Option<&'static str> {
    ["kcat", "kafkacat"].into_iter().find(|bin| {
        Command::new(bin)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kcat_produces_lists_and_consumes() {
    let Some(bin) = kcat() else {
        // The README's test command installs kcat and sets CHORUS_REQUIRE_KCAT, so there a
        // missing kcat fails; a bare `cargo test` on a developer machine may lack it.
        assert!(
            std::env::var_os("CHORUS_REQUIRE_KCAT").is_none(),
            "kcat is required but not installed"
        );
        eprintln!("kcat is not installed; skipping the kcat checks");
        return;
    };
    let broker = TestBroker::start().await;
    let bootstrap = broker.bootstrap();
    let result = tokio::task::spawn_blocking(move || {
        let mut produce = Command::new(bin)
            .args([
                "-b",
                &bootstrap,
                "-t",
                "kcat-topic",
                "-P",
                "-K",
                ":",
                "-z",
                "snappy",
            ])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        produce
            .stdin
            .take()
            .unwrap()
            .write_all(b"k1:hello\nk2:world\nk3:again\n")
            .unwrap();
        assert!(produce.wait().unwrap().success());

        let list = Command::new(bin)
            .args(["-b", &bootstrap, "-L", "-t", "kcat-topic"])
            .output()
            .unwrap();
        let listing = String::from_utf8_lossy(&list.stdout).to_string();
        assert!(listing.contains("kcat-topic"), "{listing}");
        assert!(listing.contains("leader 1"), "{listing}");

        let consume = Command::new(bin)
            .args([
                "-b",
                &bootstrap,
                "-t",
                "kcat-topic",
                "-C",
                "-o",
                "beginning",
                "-e",
                "-f",
                "%k=%s@%o\n",
            ])
            .output()
            .unwrap();
        assert!(consume.status.success());
        String::from_utf8_lossy(&consume.stdout).to_string()
    });
    let out = within(60, result).await.unwrap();
    assert_eq!(out, "k1=hello@0\nk2=world@1\nk3=again@2\n");
    broker.stop().await;
}
