//! `agora query` and `agora export`: SPARQL over the node's catalog graph (docs/RDF.md).

use std::io::{Read, Write};
use std::path::Path;

use agora_client::Client;
use agora_protocol::sparql::{ResultsFormat, TriplesFormat};
use serde_json::{Value, json};

use crate::output::Output;
use crate::{Failure, explain};

/// Runs `sparql` (`-`: read from stdin). Solutions as a table, or with `json` as the SPARQL
/// JSON results; triples as Turtle, or with `json` as JSON-LD.
pub fn query(client: &mut Client, sparql: &str, json: bool) -> Result<Output, Failure> {
    let text = if sparql == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map_err(|e| {
            Failure::new(
                2,
                format!("reading the query from stdin: {e}"),
                "pipe a SPARQL query in",
            )
        })?;
        text
    } else {
        sparql.to_owned()
    };
    let triples = if json {
        TriplesFormat::JsonLd
    } else {
        TriplesFormat::Turtle
    };
    let (media_type, body) = client
        .query(&text, ResultsFormat::Json, triples)
        .map_err(explain)?;
    if media_type != ResultsFormat::Json.media_type() {
        let text = String::from_utf8_lossy(&body).into_owned();
        return Ok(match serde_json::from_slice::<Value>(&body) {
            Ok(value) if json => Output::new(value, text),
            _ => Output::raw(text),
        });
    }
    let value: Value = serde_json::from_slice(&body).map_err(|e| {
        Failure::new(
            1,
            format!("agorad sent results that are not JSON: {e}"),
            "report this",
        )
    })?;
    let text = table(&value);
    Ok(Output::new(value, text))
}

/// SPARQL JSON results in words: `true`/`false` for an ASK, else a table.
fn table(results: &Value) -> String {
    if let Some(b) = results["boolean"].as_bool() {
        return b.to_string();
    }
    let vars: Vec<&str> = results["head"]["vars"]
        .as_array()
        .map(|v| v.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let rows: Vec<Vec<String>> = results["results"]["bindings"]
        .as_array()
        .map(|b| {
            b.iter()
                .map(|row| vars.iter().map(|v| cell(&row[*v])).collect())
                .collect()
        })
        .unwrap_or_default();
    let widths: Vec<usize> = vars
        .iter()
        .enumerate()
        .map(|(i, v)| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .max()
                .unwrap_or(0)
                .max(v.len() + 1)
        })
        .collect();
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:w$}"))
            .collect();
        padded.join("  ").trim_end().to_string()
    };
    let mut out = vec![line(vars.iter().map(|v| format!("?{v}")).collect())];
    let count = rows.len();
    out.extend(rows.into_iter().map(line));
    out.push(match count {
        1 => "(1 row)".to_string(),
        n => format!("({n} rows)"),
    });
    out.join("\n")
}

/// One bound value: an IRI in angle brackets, a literal as its text, a blank node as `_:id`.
fn cell(term: &Value) -> String {
    let value = term["value"].as_str().unwrap_or("");
    match term["type"].as_str() {
        Some("uri") => format!("<{value}>"),
        Some("bnode") => format!("_:{value}"),
        Some(_) => value.to_string(),
        None => String::new(),
    }
}

/// Has the daemon export its graph into `out`: the daemon's failure as a [`Failure`], then
/// the first failure to write, or the triples and bytes sent.
fn export_to(
    client: &mut Client,
    format: TriplesFormat,
    out: &mut impl Write,
) -> Result<std::io::Result<(u64, u64)>, Failure> {
    let mut failed = None;
    let counts = client
        .export(format, |piece| {
            if failed.is_none()
                && let Err(e) = out.write_all(piece)
            {
                failed = Some(e);
            }
        })
        .map_err(explain)?;
    Ok(failed.map_or(Ok(counts), Err))
}

/// Writes the whole catalog graph in `format` to `output` (stdout when `None`). A file is
/// written beside its place and renamed there once complete: a failed export leaves no
/// partial file behind.
pub fn export(
    client: &mut Client,
    format: TriplesFormat,
    output: Option<&Path>,
) -> Result<Output, Failure> {
    let write_failed = |e: std::io::Error, to: &str| {
        Failure::new(
            1,
            format!("writing the export to {to}: {e}"),
            "check the path and free space",
        )
    };
    let (triples, bytes) = match output {
        None => {
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            let counts = export_to(client, format, &mut out)?;
            out.flush().map_err(|e| write_failed(e, "stdout"))?;
            counts.map_err(|e| write_failed(e, "stdout"))?
        }
        Some(path) => {
            let to = path.display().to_string();
            let dir = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let mut file =
                tempfile::NamedTempFile::new_in(dir).map_err(|e| write_failed(e, &to))?;
            let counts = export_to(client, format, &mut file)?
                .and_then(|counts| file.as_file().sync_all().map(|()| counts))
                .map_err(|e| write_failed(e, &to))?;
            file.persist(path).map_err(|e| write_failed(e.error, &to))?;
            counts
        }
    };
    let summary = json!({ "format": format.name(), "triples": triples, "bytes": bytes });
    let text = format!(
        "exported {triples} triples ({bytes} bytes) as {}",
        format.name()
    );
    match output {
        // The words go to stderr: stdout holds the export.
        None => {
            crate::say(text, true);
            Ok(Output::raw(""))
        }
        Some(path) => Ok(Output::new(
            summary,
            format!("{text} to {}", path.display()),
        )),
    }
}
