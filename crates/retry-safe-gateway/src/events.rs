//! The gateway's own lines: the access log on stdout, events (started, reloaded, refused,
//! draining) on stderr, each one JSON object per line.

use std::io::Write;

/// Writes `line` and a newline to stdout in one call (lines of concurrent requests never mix).
pub(crate) fn stdout_line(line: &serde_json::Value) {
    let mut text = line.to_string();
    text.push('\n');
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

/// An event on stderr: `{"ts":…,"event":name, …fields}`.
pub(crate) fn event(name: &str, fields: serde_json::Value) {
    let mut line = serde_json::json!({
        "ts": humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
        "event": name,
    });
    if let (Some(obj), serde_json::Value::Object(extra)) = (line.as_object_mut(), fields) {
        obj.extend(extra);
    }
    let mut text = line.to_string();
    text.push('\n');
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}
