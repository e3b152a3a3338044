//! Every size and count Agora accepts from the outside, in one place, each with why it is that
//! value. Decoders enforce these before allocating; records are checked against them before
//! their signatures are verified.

/// Longest package name in bytes (ggen marketplace rule: `[a-z0-9][a-z0-9._-]{0,63}`).
pub const MAX_NAME_LEN: usize = 64;
/// Longest semver string (version or requirement) we parse. Real ones are under 40 bytes;
/// 128 leaves room for pre-release and build metadata without letting a peer send megabytes.
pub const MAX_VERSION_LEN: usize = 128;
/// Longest description, in bytes: a paragraph for search results, not a README.
pub const MAX_DESCRIPTION_LEN: usize = 1024;
/// Longest short metadata field (category, license, author), in bytes.
pub const MAX_SHORT_FIELD_LEN: usize = 128;
/// Longest repository URL, in bytes.
pub const MAX_URL_LEN: usize = 256;
/// Most tags, and most keywords, per package.
pub const MAX_TAGS: usize = 16;
/// Longest tag or keyword, in bytes.
pub const MAX_TAG_LEN: usize = 32;
/// Most `include` or `exclude` patterns in a package.toml.
pub const MAX_PATTERNS: usize = 256;
/// Longest `include` or `exclude` pattern, in bytes.
pub const MAX_PATTERN_LEN: usize = 256;
/// Most direct dependencies of one release.
pub const MAX_DEPENDENCIES: usize = 64;
/// Largest `package.toml` read from disk or from an archive.
pub const MAX_MANIFEST_BYTES: usize = 64 * 1024;

/// Largest package archive (compressed). Template packs are small; 256 MiB bounds a hostile
/// advertisement while leaving room for packs that ship binary assets.
pub const MAX_ARCHIVE_BYTES: u64 = 256 * 1024 * 1024;
/// Smallest chunk size a publisher cuts an archive into (see
/// [`crate::records::ArchiveInfo::chunk_size_for`]): a chunk crosses a 40 Mbit/s link in
/// 50 ms, so a crowd that starts together passes its first chunks on within a fraction of a
/// second; a fetch's 16 requests in flight (4 MiB) still keep a fast link full.
pub const MIN_PUBLISH_CHUNK_SIZE: u32 = 256 * 1024;
/// Chunks a publisher cuts a larger archive into at most, where the chunk size allows:
/// half of [`MAX_CHUNKS`], so that the largest archive's chunks are [`MAX_CHUNK_SIZE`].
pub const PUBLISH_CHUNKS: u64 = 256;
/// Smallest chunk size a record may declare (keeps the chunk list short).
pub const MIN_CHUNK_SIZE: u32 = 16 * 1024;
/// Largest chunk size a record may declare; also bounds one fetch response.
pub const MAX_CHUNK_SIZE: u32 = 1024 * 1024;
/// Most chunks in one archive. 512 hashes are 16 KiB, which keeps a release record small
/// enough for one DHT packet; an archive of [`MAX_ARCHIVE_BYTES`] needs 512 KiB chunks.
pub const MAX_CHUNKS: usize = 512;

/// Most versions listed in a [`crate::PackageHead`]: the newest ones; older releases are
/// still found by their own `agora/rel/` key and by catalog sync.
pub const MAX_HEAD_VERSIONS: usize = 64;
/// Longest yank reason, in bytes.
pub const MAX_YANK_REASON_LEN: usize = 256;
/// Yanked versions a key rotation carries over to the new key.
pub const MAX_ROTATION_YANKS: usize = 64;

/// Largest record of any kind (release, head, yank, rotation), measured as its encoding on its
/// own: the version byte and the signed body, as a DHT value carries it. The one size rule for
/// a record wherever it comes from or is kept: a record is signed only within it, and a record
/// over it is refused by `verify` before its signature is checked, so what a node admitted
/// from gossip or sync always fits its DHT store and reads back from its own log.
pub const MAX_RECORD_BYTES: usize = 32 * 1024;
/// A record inside a message that says what kind it is (a gossip message, a sync response's
/// records, the node's log): the record and the one byte of its kind.
pub const MAX_TAGGED_RECORD_BYTES: usize = MAX_RECORD_BYTES + 1;
/// Largest gossip message: one tagged record.
pub const MAX_GOSSIP_BYTES: usize = MAX_TAGGED_RECORD_BYTES;
/// Largest DHT value we store or accept (a head or a release record).
pub const MAX_DHT_VALUE_BYTES: usize = MAX_RECORD_BYTES;
/// Kademlia wire packet limit: one value plus the rest of a kad message (closer peers with
/// their addresses).
pub const MAX_KAD_PACKET_BYTES: usize = MAX_DHT_VALUE_BYTES + 32 * 1024;

/// Largest sync request: the longest list of ids or buckets a peer may ask for at once.
pub const MAX_SYNC_REQUEST_BYTES: usize = 64 * 1024;
/// Most record ids (or bucket indices) in one sync request or id listing.
pub const MAX_SYNC_IDS: usize = 1024;
/// Most record ids in one sync id listing (the ids of the buckets asked for). A catalog of a
/// million releases has about 4,000 ids per bucket; 65,536 ids (2 MiB) leave room for many
/// buckets at once and stay under [`MAX_SYNC_RESPONSE_BYTES`].
pub const MAX_SYNC_LISTED_IDS: usize = 65_536;
/// Most records in one sync response.
pub const MAX_SYNC_RECORDS: usize = 256;
/// Largest sync response: [`MAX_SYNC_RECORDS`] records of [`MAX_RECORD_BYTES`] would be 8 MiB;
/// a responder stops adding records before it crosses this line.
pub const MAX_SYNC_RESPONSE_BYTES: usize = 4 * 1024 * 1024;
/// Number of buckets in a catalog summary (records are bucketed by the first byte of their id).
pub const SYNC_BUCKETS: usize = 256;

/// Largest fetch request (a content id and an index).
pub const MAX_FETCH_REQUEST_BYTES: usize = 256;
/// Largest fetch response: one chunk plus framing.
pub const MAX_FETCH_RESPONSE_BYTES: usize = MAX_CHUNK_SIZE as usize + 256;
/// Largest encoded have request and response (a map of at most `MAX_CHUNKS` bits, an id and
/// framing).
pub const MAX_HAVE_BYTES: usize = 256;

/// Longest search query text, in bytes.
pub const MAX_SEARCH_QUERY_LEN: usize = 256;
/// Most results in one search page.
pub const MAX_SEARCH_LIMIT: u32 = 1000;
/// Deepest result a search can page to (offset + limit): the index keeps that many
/// candidates in memory per search, so it must be bounded. Like Elasticsearch's default
/// result window.
pub const MAX_SEARCH_WINDOW: u32 = 10_000;

/// Largest IPC frame payload in either direction. Requests carry paths and queries; responses
/// carry search pages and package lists. 16 MiB is far above any of them and still bounded.
pub const MAX_IPC_FRAME_BYTES: usize = 16 * 1024 * 1024;
/// Longest string field in an IPC request (queries, paths, multiaddrs).
pub const MAX_IPC_STRING_LEN: usize = 4096;
/// Longest SPARQL query the socket and the gateway take: the longest of the queries docs/RDF.md
/// shows is under 1 KiB, and parsing is linear in the text.
pub const MAX_SPARQL_QUERY_BYTES: usize = 16 * 1024;
/// Largest SPARQL answer, written: it must fit in one IPC frame with room to spare.
pub const MAX_SPARQL_ANSWER_BYTES: usize = 8 * 1024 * 1024;
/// Most rows (solutions, or triples) of a SPARQL answer. A client that wants more pages with
/// `LIMIT` and `OFFSET`, or exports the catalog.
pub const MAX_SPARQL_ROWS: usize = 10_000;
/// Most items in a list field of an IPC request (resolution roots).
pub const MAX_IPC_LIST_LEN: usize = 1024;
