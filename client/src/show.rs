//! How the daemon's answers read in words (the JSON is the answer itself).

use agora_client::ipc::{PeerInfo, PublishedInfo, ReleaseInfo, VersionEntry};
use agora_protocol::ipc::{IndexState, StatusInfo, StoreCheck};
use agora_protocol::search::SearchResults;

use crate::output::{Lines, Output, columns, count, cut, human_bytes, human_duration};

pub fn status(s: &StatusInfo) -> Output {
    Output::with(s, |s, w| {
        w.line(format!("peer id       {}", s.peer_id));
        for a in &s.listen_addrs {
            w.line(format!("listening on  {a}"));
        }
        for a in &s.external_addrs {
            w.line(format!("external      {a}"));
        }
        w.line(format!(
            "peers         {} connected, {} in the routing table",
            s.peers, s.routing_table
        ));
        w.line(format!(
            "reachable     {}",
            match s.reachability.as_str() {
                "public" => "yes: peers can dial this node",
                "private" => "only through relays (behind a NAT or firewall)",
                _ => "not known yet",
            }
        ));
        if let Some(fingerprint) = &s.private_network {
            w.line(format!(
                "network       private (key {fingerprint}): members only, TCP only"
            ));
        }
        w.line(format!(
            "catalog       {}, {}",
            count(s.catalog_size, "record"),
            count(s.packages, "package")
        ));
        w.line(match &s.search_index {
            IndexState::Ready => format!("search        {} indexed", count(s.indexed, "package")),
            IndexState::Rebuilding => {
                "search        index being rebuilt (searches wait for it)".to_string()
            }
            IndexState::Failed(why) => format!(
                "search        refused: the index could not be rebuilt ({why}); restart agorad"
            ),
        });
        w.line(format!(
            "disk          {} cached of {} quota, {} stored in all",
            human_bytes(s.cache_bytes),
            human_bytes(s.cache_quota),
            human_bytes(s.store_bytes)
        ));
        let asked = s.cache_hits + s.cache_misses;
        w.line(if asked == 0 {
            "cache hits    none asked yet".to_string()
        } else {
            format!(
                "cache hits    {:.1}% ({} of {asked})",
                100.0 * s.cache_hits as f64 / asked as f64,
                s.cache_hits
            )
        });
        w.line(format!(
            "publisher     {}",
            s.publisher.as_deref().unwrap_or("none (agora keygen)")
        ));
        w.line(format!(
            "http          {}",
            s.http.as_deref().unwrap_or("off")
        ));
        w.line(format!("log level     {}", s.log_level));
        w.line(format!("uptime        {}", human_duration(s.uptime_secs)));
        w.line(format!("data          {}", s.data_dir));
        store_check(&s.store_check, w);
        if let Some(r) = &s.repair {
            w.line(format!("repaired      at start: {}", r.cause));
            if let Some(aside) = &r.set_aside {
                w.line(format!(
                    "              the damaged database is kept at {aside}"
                ));
            }
            let peers: u64 = r.from_peers.iter().map(|(_, n)| n).sum();
            w.line(format!(
                "              taken back: {} records from the journal, {} archives \
                 ({} removed), {peers} records from {} peers so far",
                r.from_journal,
                r.blobs_kept,
                r.blobs_dropped,
                r.from_peers.len()
            ));
        }
        w.line(format!("version       {}", s.version));
    })
}

fn store_check(check: &StoreCheck, w: &mut Lines) {
    w.line(match check {
        StoreCheck::Running => "store check   running".to_string(),
        StoreCheck::Sound { records } => {
            format!("store check   sound ({records} records checked)")
        }
        StoreCheck::Damaged(why) => format!(
            "store check   DAMAGED: {why}; the next start repairs it (or 'agora node repair')"
        ),
        StoreCheck::Failed(why) => format!("store check   could not run: {why}"),
    });
}

pub fn publish(p: &PublishedInfo) -> Output {
    Output::with(p, |p, w| {
        let r = &p.release;
        let what = if p.published {
            "published"
        } else {
            "checked (dry run)"
        };
        w.line(format!(
            "{what} {}@{} ({} files, {} archive, sha256 {})",
            r.name,
            r.version,
            p.files.len(),
            human_bytes(r.size),
            r.sha256
        ));
        if !p.published {
            let width = p.files.iter().map(|f| f.path.len()).max().unwrap_or(0);
            for f in &p.files {
                w.line(format!("  {:width$}  {:>10}", f.path, human_bytes(f.size)));
            }
            if !r.publisher.is_empty() {
                w.line(format!("would be signed by {}", r.publisher));
            }
            if !r.dependencies.is_empty() {
                w.line(format!("depends on {}", r.dependencies.join(", ")));
            }
        }
        for warning in &p.warnings {
            w.line(format!("warning: {warning}"));
        }
    })
}

pub fn search(r: &SearchResults) -> Output {
    Output::with(r, |r, w| {
        if r.hits.is_empty() {
            w.line("no packages found");
            return;
        }
        // Columns as wide as what they hold; the description cut to what the terminal has
        // left, never wrapped.
        let name = r
            .hits
            .iter()
            .map(|h| h.name.len())
            .max()
            .unwrap_or(0)
            .max(4);
        let version = r
            .hits
            .iter()
            .map(|h| h.version.len())
            .max()
            .unwrap_or(0)
            .max(7);
        let room = columns().map(|c| c.saturating_sub(name + version + 4).max(12));
        w.line(format!(
            "{:name$}  {:version$}  DESCRIPTION",
            "NAME", "VERSION"
        ));
        for h in &r.hits {
            let description = match room {
                Some(room) => cut(&h.description, room),
                None => h.description.clone(),
            };
            w.line(format!(
                "{:name$}  {:version$}  {description}",
                h.name, h.version
            ));
        }
        w.line(format!(
            "({} of {})",
            r.hits.len(),
            count(r.total, "package")
        ));
    })
}

pub fn info(r: &ReleaseInfo) -> Output {
    Output::with(r, |r, w| {
        w.line(format!(
            "{}@{}{}",
            r.name,
            r.version,
            yank_flag(r.yanked, r.yank_reason.as_deref())
        ));
        w.line(format!("  {}", r.description));
        for (k, v) in [
            ("category", &r.category),
            ("author", &r.author),
            ("license", &r.license),
            ("repository", &r.repository),
        ] {
            if let Some(v) = v {
                w.line(format!("  {k:12} {v}"));
            }
        }
        if !r.tags.is_empty() {
            w.line(format!("  {:12} {}", "tags", r.tags.join(", ")));
        }
        if !r.dependencies.is_empty() {
            w.line(format!(
                "  {:12} {}",
                "depends on",
                r.dependencies.join(", ")
            ));
        }
        w.line(format!(
            "  {:12} {}, sha256 {}",
            "archive",
            human_bytes(r.size),
            r.sha256
        ));
        w.line(format!("  {:12} {}", "publisher", r.publisher));
    })
}

pub fn versions(v: &[VersionEntry]) -> Output {
    Output::with(v, |v, w| {
        for e in v {
            let flag = match (e.yanked, e.equivocated) {
                (_, true) => "  (equivocated: two different records; not installable)".into(),
                (true, false) => format!(" {}", yank_flag(true, e.yank_reason.as_deref())),
                _ => String::new(),
            };
            w.line(format!("{}{flag}", e.version));
        }
    })
}

/// " (yanked: REASON)", " (yanked)" or nothing.
fn yank_flag(yanked: bool, reason: Option<&str>) -> String {
    match (yanked, reason) {
        (false, _) => String::new(),
        (true, None) => " (yanked)".into(),
        (true, Some(reason)) => format!(" (yanked: {reason})"),
    }
}

pub fn peers(p: &[PeerInfo]) -> Output {
    Output::with(p, |peers, w| {
        if peers.is_empty() {
            w.line("no peers connected");
        }
        for p in peers {
            let via = if p.relayed { "relayed" } else { "direct " };
            let score = match p.score {
                Some(s) => format!("score {s:.3}"),
                None => "banned     ".into(),
            };
            w.line(format!(
                "{}  {via}  {score}  {}",
                p.peer_id,
                p.addresses.join(" ")
            ));
        }
    })
}
