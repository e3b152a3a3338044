//! What a command prints. Every command returns an [`Output`] (its answer as JSON, and the
//! same answer in words) and `main` prints it once: the JSON with `--json`, the words
//! otherwise. No command decides how to print.

use std::fmt::Write;

use serde::Serialize;

/// A command's answer, ready to print either way.
pub struct Output {
    /// `None` for text that is the same either way (a completion script).
    json: Option<serde_json::Value>,
    text: String,
}

impl Output {
    /// `value` as JSON, `text` in words.
    pub fn new(value: impl Serialize, text: impl Into<String>) -> Self {
        Self {
            json: Some(serde_json::to_value(value).expect("answers serialise")),
            text: text.into(),
        }
    }

    /// Text printed as it is, with `--json` too.
    pub fn raw(text: impl Into<String>) -> Self {
        Self {
            json: None,
            text: text.into(),
        }
    }

    /// `value` as JSON, and in words as `words` writes it.
    pub fn with<T: Serialize + ?Sized>(value: &T, words: impl FnOnce(&T, &mut Lines)) -> Self {
        let mut lines = Lines(String::new());
        words(value, &mut lines);
        Self::new(value, lines.0)
    }

    /// The answer as JSON (`None` for text that is the same either way).
    pub fn value(&self) -> Option<&serde_json::Value> {
        self.json.as_ref()
    }

    /// The JSON, pretty-printed, with `json`; otherwise the words (without a final newline).
    pub fn render(&self, json: bool) -> String {
        match &self.json {
            Some(value) if json => {
                serde_json::to_string_pretty(value).expect("JSON values serialise")
            }
            _ => self.text.trim_end_matches('\n').to_string(),
        }
    }
}

/// Lines of text being written for an [`Output`].
pub struct Lines(String);

impl Lines {
    pub fn line(&mut self, line: impl std::fmt::Display) {
        writeln!(self.0, "{line}").expect("writing to a String");
    }
}

/// The terminal's width in columns: `COLUMNS` when set (as shells and scripts set it),
/// else the width of the terminal stdout is, else none (a pipe: nothing is cut).
pub fn columns() -> Option<usize> {
    match std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok()) {
        Some(c) if c > 0 => Some(c),
        _ => console::Term::stdout()
            .size_checked()
            .map(|(_, cols)| usize::from(cols)),
    }
}

/// `text` cut to `width` characters, ending in `…` when cut.
pub fn cut(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let kept: String = text.chars().take(width.saturating_sub(1)).collect();
    format!("{kept}…")
}

/// "1 record", "2 records".
pub fn count(n: u64, thing: &str) -> String {
    if n == 1 {
        format!("1 {thing}")
    } else {
        format!("{n} {thing}s")
    }
}

/// 1536 → "1.5 KiB".
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// 3725 → "1h 2m 5s".
pub fn human_duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m {s}s"),
        _ => format!("{d}d {h}h {m}m"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_read_naturally() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(1 << 30), "1.0 GiB");
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(125), "2m 5s");
        assert_eq!(human_duration(3725), "1h 2m 5s");
        assert_eq!(human_duration(90_061), "1d 1h 1m");
        assert_eq!(count(1, "record"), "1 record");
        assert_eq!(count(0, "package"), "0 packages");
        assert_eq!(cut("templates for a site", 9), "template…");
        assert_eq!(cut("short", 9), "short");
    }

    #[test]
    fn an_answer_reads_the_same_either_way() {
        #[derive(Serialize)]
        struct Answer {
            name: &'static str,
            size: u64,
        }
        let out = Output::with(
            &Answer {
                name: "a",
                size: 1536,
            },
            |a, w| {
                w.line(format!("{} is {}", a.name, human_bytes(a.size)));
                w.line("done");
            },
        );
        assert_eq!(out.render(false), "a is 1.5 KiB\ndone");
        assert_eq!(
            out.render(true),
            "{\n  \"name\": \"a\",\n  \"size\": 1536\n}"
        );
        let script = Output::raw("complete -F _agora agora\n");
        assert_eq!(script.render(true), "complete -F _agora agora");
    }
}
