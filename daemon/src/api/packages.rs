//! Requests about packages: a release, the versions of a name, a resolution, an archive
//! fetched. A name or version the catalog lacks is looked up on the DHT first.

use std::collections::BTreeMap;

use agora_protocol::ipc::{FetchedInfo, IpcError, Progress, Response, ServerMessage, VersionEntry};
use agora_protocol::records::ReleaseBody;
use agora_protocol::{ContentId, Dependency, PackageName, Version, VersionReq};

use super::{
    Context, Outbox, bad, name, network, progress, release_info, version, with_lookup,
    with_suggestion, yank_of,
};
use crate::catalog::CatalogError;
use crate::catalog::resolve::ResolveError;
use crate::ops::RegistryError;
use crate::ops::fetch::FetchError;

/// Most names one resolution looks up on the DHT (each lookup is two DHT queries).
const MAX_LOOKUPS_PER_RESOLVE: usize = 64;

/// `info NAME[@REQ]`: the newest release that matches.
pub(super) async fn info(
    ctx: &Context,
    n: String,
    req: Option<String>,
) -> Result<Response, IpcError> {
    let registry = &ctx.registry;
    let n = name(&n)?;
    let req = match req.as_deref() {
        None => VersionReq::STAR,
        Some(r) => agora_protocol::dependency::parse_req(r).map_err(bad)?,
    };
    // `=x.y.z` is a pin (a lockfile's): exactly that release, yanked or not.
    let exact = match req.comparators.as_slice() {
        [c] if c.op == semver::Op::Exact && c.minor.is_some() && c.patch.is_some() => {
            Some(Version {
                major: c.major,
                minor: c.minor.unwrap_or(0),
                patch: c.patch.unwrap_or(0),
                pre: c.pre.clone(),
                build: Default::default(),
            })
        }
        _ => None,
    };
    let record = with_lookup(registry, &n, &req, || {
        let (n, req, exact) = (n.clone(), req.clone(), exact.clone());
        registry.read(move |c| match &exact {
            Some(v) => c.release(&n, v),
            None => c.get(&n, &req),
        })
    })
    .await?;
    let (yanked, reason) = yank_of(registry, &record);
    let mut info = release_info(&record, yanked);
    info.yank_reason = reason;
    Ok(Response::Release(info))
}

/// `versions NAME`.
pub(super) async fn versions(ctx: &Context, n: String) -> Result<Response, IpcError> {
    let registry = &ctx.registry;
    let n = name(&n)?;
    let versions = with_lookup(registry, &n, &VersionReq::STAR, || async {
        Ok(registry.view().versions(&n)?)
    })
    .await?;
    Ok(Response::Versions(
        versions
            .into_iter()
            .map(|v| VersionEntry {
                version: v.version.to_string(),
                yanked: v.yanked,
                yank_reason: v.yank_reason,
                equivocated: v.equivocated,
            })
            .collect(),
    ))
}

/// `resolve ROOTS`: every release an install of `roots` needs.
pub(super) async fn resolve(
    ctx: &Context,
    roots: Vec<String>,
    prefer: Vec<String>,
) -> Result<Response, IpcError> {
    let registry = &ctx.registry;
    let roots: Vec<Dependency> = roots
        .iter()
        .map(|r| r.parse().map_err(bad))
        .collect::<Result<_, _>>()?;
    let prefer: BTreeMap<PackageName, Version> = prefer
        .iter()
        .map(|pin| {
            let (n, v) = pin
                .split_once('@')
                .ok_or_else(|| bad(format!("{pin:?} is not name@version")))?;
            Ok((name(n)?, version(v)?))
        })
        .collect::<Result<_, IpcError>>()?;
    // What the catalog lacks (names, or versions that meet a requirement) is looked up on
    // the DHT, then resolution starts over.
    let mut lookups = 0;
    let resolved = loop {
        let (r, p) = (roots.clone(), prefer.clone());
        let failed = match registry.read(move |c| c.resolve(&r, &p)).await {
            Ok(resolved) => break resolved,
            Err(e) => e,
        };
        let RegistryError::Catalog(CatalogError::Resolve(ResolveError::NoSolution {
            missing,
            unmatched,
            ..
        })) = &failed
        else {
            return Err(failed.into());
        };
        let any = VersionReq::STAR;
        let wanted = missing
            .iter()
            .map(|name| (name, &any))
            .chain(unmatched.iter().map(|d| (&d.name, &d.req)));
        let mut found = false;
        for (name, req) in wanted {
            if lookups == MAX_LOOKUPS_PER_RESOLVE {
                break;
            }
            lookups += 1;
            found |= registry.look_up(name, req).await?;
        }
        // Nothing new found: the resolution would fail the same way again.
        if !found {
            let first_missing = missing.first().cloned();
            return Err(match first_missing {
                Some(name) => with_suggestion(registry, &name, failed.into()).await,
                None => failed.into(),
            });
        }
    };
    let records = registry
        .read(move |c| {
            resolved
                .iter()
                .map(|p| c.release(&p.name, &p.version))
                .collect::<Result<Vec<_>, _>>()
        })
        .await?;
    Ok(Response::Resolved(
        records.iter().map(|r| release_info(r, false)).collect(),
    ))
}

/// Where no provider could be reached from a node that is, or may be, behind a NAT, what
/// explains it: providers behind other NATs are reached only through relays, which the node
/// may lack. Its reachability may still be unknown when a first install fails.
async fn behind_a_nat(ctx: &Context) -> Option<String> {
    use crate::network::Reachability;
    let info = ctx.network.info().await.ok()?;
    let relayed = info.listen_addrs.iter().any(crate::network::is_relayed);
    match (info.reachability, relayed) {
        (Reachability::Public, _) | (Reachability::Unknown, true) => None,
        (_, false) => Some(
            "this node holds no slot on a relay, so if it is behind a NAT it reaches no \
             provider behind another one; bootstrap from a public node that relays \
             (docs/OPERATING.md, Behind a NAT)"
                .into(),
        ),
        (Reachability::Private, true) => Some(
            "this node is behind a NAT: a provider behind another NAT is reached only \
             through a relay it holds a slot on too; check 'agora peers'"
                .into(),
        ),
    }
}

/// `fetch NAME VERSION`: the archive made local, with progress as it arrives.
pub(super) async fn fetch(
    ctx: &Context,
    id: u64,
    out: &Outbox,
    n: String,
    v: String,
) -> Result<Response, IpcError> {
    let registry = &ctx.registry;
    progress(out, id, "fetching").await;
    let sender = out.clone();
    // Progress is best effort: a client that reads slowly misses updates, not data.
    let on_bytes: crate::ops::fetch::ProgressFn = Box::new(move |d| {
        let _ = sender.try_send(ServerMessage::Progress {
            id,
            progress: Progress::Download {
                done: d.done,
                total: d.total,
                readable: d.readable,
                path: d.path.display().to_string(),
            },
        });
    });
    let (n, v) = (name(&n)?, version(&v)?);
    let pin = VersionReq::parse(&format!("={v}")).map_err(bad)?;
    with_lookup(registry, &n, &pin, || {
        let (n, v) = (n.clone(), v.clone());
        registry.read(move |c| c.release(&n, &v))
    })
    .await?;
    let fetched = match registry.fetch_with_progress(&n, &v, Some(on_bytes)).await {
        Ok(fetched) => fetched,
        Err(
            e @ RegistryError::Fetch(
                FetchError::NoProviders(_) | FetchError::ChunksUnavailable { .. },
            ),
        ) => {
            return Err(match behind_a_nat(ctx).await {
                Some(hint) => IpcError::from(e).hinted(hint),
                None => e.into(),
            });
        }
        Err(e) => return Err(e.into()),
    };
    let relayed = match fetched.served_by.is_empty() {
        true => false,
        false => {
            let info = ctx.network.info().await.map_err(network)?;
            fetched.served_by.iter().any(|(p, _)| info.only_relayed(p))
        }
    };
    Ok(Response::Fetched(FetchedInfo {
        relayed,
        path: fetched.path.display().to_string(),
        sha256: ContentId::to_hex(&fetched.content),
        size: fetched.size,
        cached: fetched.cached,
        providers: fetched
            .served_by
            .iter()
            .map(|(p, _)| p.to_string())
            .collect(),
    }))
}

/// Every package's newest installable release, by name (ggen's registry index on the gateway).
pub async fn newest_releases(ctx: &Context) -> Result<Vec<ReleaseBody>, IpcError> {
    let releases = ctx.registry.read(|c| c.newest_releases()).await?;
    Ok(releases.into_iter().map(|r| r.body).collect())
}
