//! The chat gateway with a browser-style client: Python's `websockets` library against a
//! `chorus serve` process (the broker's own tests use the Rust client).

use crate::clients::{python, run, script, Broker, CHAT_SECRET};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_websocket_client_chats_and_catches_up() {
    let Some(python) = python() else { return };
    let broker = Broker::start().await;
    let path = script("python/chat_ws.py");
    run(
        &python,
        &[
            path.to_str().expect("utf-8 path"),
            &broker.http,
            CHAT_SECRET,
        ],
        &[],
        60,
    )
    .await;
    broker.stop().await;
}
