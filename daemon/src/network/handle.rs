//! `NetworkHandle`: the cloneable, Send + Sync way to talk to the event loop. Every call
//! sends a command with a oneshot reply and waits at most `command_timeout` for the answer.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use agora_protocol::messages::{
    FetchRequest, FetchResponse, HaveRequest, HaveResponse, SyncRequest, SyncResponse,
};
use libp2p::gossipsub::{MessageAcceptance, MessageId};
use libp2p::request_response::InboundRequestId;
use libp2p::{Multiaddr, PeerId, kad};
use tokio::sync::{mpsc, oneshot};

use super::command::{Command, Envelope, NetworkError, NetworkInfo, RecordQuorum, Reply};
use super::query::MAX_PROVIDERS_PER_GET;

#[derive(Clone, Debug)]
pub struct NetworkHandle {
    tx: mpsc::Sender<Envelope>,
    peer_id: PeerId,
    timeout: Duration,
    /// Peers' chunk requests open for a while, as the event loop last counted them.
    uploads: Arc<AtomicUsize>,
}

impl NetworkHandle {
    pub(crate) fn new(
        tx: mpsc::Sender<Envelope>,
        peer_id: PeerId,
        timeout: Duration,
        uploads: Arc<AtomicUsize>,
    ) -> Self {
        Self {
            tx,
            peer_id,
            timeout,
            uploads,
        }
    }

    /// Peers' chunk requests whose answers have been on their way for a while (a queue:
    /// the node's upload is what limits them), as counted at the last chunk request that
    /// came or ended. Read without asking the event loop.
    pub fn uploads_queued(&self) -> usize {
        self.uploads.load(Ordering::Relaxed)
    }

    /// This node's peer id (known without asking the event loop).
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, NetworkError> {
        let (reply, rx) = oneshot::channel();
        let exchange = async {
            self.tx
                .send(envelope(make(reply)))
                .await
                .map_err(|_| NetworkError::Shutdown)?;
            rx.await.map_err(|_| NetworkError::Shutdown)?
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| NetworkError::Timeout(self.timeout))?
    }

    /// Sends a command that has no reply, waiting at most the timeout for channel space.
    async fn tell(&self, cmd: Command) -> Result<(), NetworkError> {
        tokio::time::timeout(self.timeout, self.tx.send(envelope(cmd)))
            .await
            .map_err(|_| NetworkError::Timeout(self.timeout))?
            .map_err(|_| NetworkError::Shutdown)
    }

    /// Starts listening; returns the first concrete address (port 0 resolved).
    pub async fn listen(&self, addr: Multiaddr) -> Result<Multiaddr, NetworkError> {
        self.call(|reply| Command::Listen { addr, reply }).await
    }

    /// Dials an address and waits for the connection; returns the peer's id.
    pub async fn dial(&self, addr: Multiaddr) -> Result<PeerId, NetworkError> {
        self.call(|reply| Command::Dial { addr, reply }).await
    }

    /// Adds a known address of a peer to the routing table.
    pub async fn add_address(&self, peer: PeerId, addr: Multiaddr) -> Result<(), NetworkError> {
        self.call(|reply| Command::AddAddress { peer, addr, reply })
            .await
    }

    /// Runs a Kademlia bootstrap and waits for it to finish.
    pub async fn bootstrap(&self) -> Result<(), NetworkError> {
        self.call(|reply| Command::Bootstrap { reply }).await
    }

    /// Stores a record locally and at the closest peers (quorum of one). The value is
    /// validated here, on the caller's task, so the event loop never verifies signatures for
    /// our own writes and the local store only ever holds valid values.
    pub async fn put_record(&self, key: Vec<u8>, value: Vec<u8>) -> Result<(), NetworkError> {
        agora_protocol::dht::validate(&key, &value)
            .map_err(|e| NetworkError::Store(e.to_string()))?;
        self.call(|reply| Command::PutRecord { key, value, reply })
            .await
    }

    /// Looks a record up; every returned value has passed `agora_protocol::dht::validate`.
    pub async fn get_record(
        &self,
        key: Vec<u8>,
        quorum: RecordQuorum,
    ) -> Result<Vec<Vec<u8>>, NetworkError> {
        self.call(|reply| Command::GetRecord { key, quorum, reply })
            .await
    }

    /// Stores an inbound record the registry accepted into the local DHT store.
    pub async fn store_record(&self, record: kad::Record) -> Result<(), NetworkError> {
        match self.store_records(vec![record]).await?.pop() {
            Some((_, refused)) => Err(refused),
            None => Ok(()),
        }
    }

    /// Stores records into the local DHT store in one command (a node restores every head it
    /// holds at start, and a command per record costs a round trip through the event loop
    /// each); returns the position and the reason of each record refused. Keep batches to a few thousand records: the event loop
    /// does nothing else while it stores them.
    pub async fn store_records(
        &self,
        records: Vec<kad::Record>,
    ) -> Result<Vec<(usize, NetworkError)>, NetworkError> {
        self.call(|reply| Command::StoreRecords { records, reply })
            .await
    }

    /// Announces this node as a provider of `key`.
    pub async fn start_providing(&self, key: Vec<u8>) -> Result<(), NetworkError> {
        self.call(|reply| Command::StartProviding { key, reply })
            .await
    }

    /// Stops providing `key`: its provider record is no longer republished, and peers stop
    /// being sent here once the records they hold expire.
    pub async fn stop_providing(&self, key: Vec<u8>) -> Result<(), NetworkError> {
        self.call(|reply| Command::StopProviding { key, reply })
            .await
    }

    /// Searches the DHT for providers of `key`. Each provider comes on the returned channel
    /// as soon as the search meets it (each once, at most `MAX_PROVIDERS_PER_GET`); the
    /// channel closes when the search ends: every closest peer asked, the most providers
    /// found, or the query timeout. A caller can start on the first provider while the search
    /// goes on waiting for slow or unreachable peers. Dropping the receiver stops the search.
    pub async fn find_providers(
        &self,
        key: Vec<u8>,
    ) -> Result<mpsc::Receiver<PeerId>, NetworkError> {
        let (to, found) = mpsc::channel(MAX_PROVIDERS_PER_GET);
        self.tell(Command::FindProviders { key, to }).await?;
        Ok(found)
    }

    /// Publishes on the release topic.
    pub async fn publish(&self, data: Vec<u8>) -> Result<(), NetworkError> {
        self.call(|reply| Command::Publish { data, reply }).await
    }

    /// Reports the verdict on a gossip message received as `NetworkEvent::Gossip`.
    pub async fn report_validation(
        &self,
        id: MessageId,
        source: PeerId,
        acceptance: MessageAcceptance,
    ) -> Result<(), NetworkError> {
        self.tell(Command::ReportValidation {
            id,
            source,
            acceptance,
        })
        .await
    }

    pub async fn send_sync(
        &self,
        peer: PeerId,
        request: SyncRequest,
    ) -> Result<SyncResponse, NetworkError> {
        self.call(|reply| Command::SendSync {
            peer,
            request,
            reply,
        })
        .await
    }

    pub async fn send_fetch(
        &self,
        peer: PeerId,
        request: FetchRequest,
    ) -> Result<FetchResponse, NetworkError> {
        self.call(|reply| Command::SendFetch {
            peer,
            request,
            reply,
        })
        .await
    }

    pub async fn send_have(
        &self,
        peer: PeerId,
        request: HaveRequest,
    ) -> Result<HaveResponse, NetworkError> {
        self.call(|reply| Command::SendHave {
            peer,
            request,
            reply,
        })
        .await
    }

    pub async fn respond_have(
        &self,
        id: InboundRequestId,
        response: HaveResponse,
    ) -> Result<(), NetworkError> {
        self.tell(Command::RespondHave { id, response }).await
    }

    pub async fn respond_sync(
        &self,
        id: InboundRequestId,
        response: SyncResponse,
    ) -> Result<(), NetworkError> {
        self.tell(Command::RespondSync { id, response }).await
    }

    pub async fn respond_fetch(
        &self,
        id: InboundRequestId,
        response: FetchResponse,
    ) -> Result<(), NetworkError> {
        self.tell(Command::RespondFetch { id, response }).await
    }

    pub async fn info(&self) -> Result<NetworkInfo, NetworkError> {
        self.call(|reply| Command::Info { reply }).await
    }

    /// The connected peers.
    pub async fn peers(&self) -> Result<Vec<PeerId>, NetworkError> {
        Ok(self.info().await?.connected_peers)
    }

    /// Gossipsub's score of `peer`, if it is known.
    pub async fn gossip_score(&self, peer: PeerId) -> Result<Option<f64>, NetworkError> {
        self.call(|reply| Command::GossipScore { peer, reply })
            .await
    }

    /// Blocks `peer`: its connections are closed and no new one is allowed, either way,
    /// until it is unblocked.
    pub async fn block_peer(&self, peer: PeerId) -> Result<(), NetworkError> {
        self.call(|reply| Command::Block {
            peer,
            blocked: true,
            reply,
        })
        .await
    }

    /// Allows connections with `peer` again.
    pub async fn unblock_peer(&self, peer: PeerId) -> Result<(), NetworkError> {
        self.call(|reply| Command::Block {
            peer,
            blocked: false,
            reply,
        })
        .await
    }

    /// Stops the event loop; later calls return `NetworkError::Shutdown`.
    pub async fn shutdown(&self) -> Result<(), NetworkError> {
        match self.call(|reply| Command::Shutdown { reply }).await {
            Err(NetworkError::Shutdown) | Ok(()) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

// The handle is shared across tasks and threads: keep it Clone + Send + Sync. (Its futures
// being Send is shown by the multi-node tests, which `tokio::spawn` them.)
const _: () = {
    const fn assert_shareable<T: Clone + Send + Sync + 'static>() {}
    assert_shareable::<NetworkHandle>();
};

fn envelope(command: Command) -> Envelope {
    Envelope {
        command,
        span: tracing::Span::current(),
    }
}
