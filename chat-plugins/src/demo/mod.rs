//! The page at `/` for trying the chat fabric in a browser, and the development tokens it
//! logs in with (`POST /dev/token`, only when the server made up its own secret).

/// The page (plain HTML and JavaScript, no build step).
pub const PAGE: &str = include_str!("page.html");
