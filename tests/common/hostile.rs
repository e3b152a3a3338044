//! A hostile peer: a bare libp2p swarm that speaks Agora's Kademlia and gossip protocols but
//! none of its rules, used to offer bad records to real nodes.

use std::time::Duration;

use agora_protocol::messages::{GOSSIP_TOPIC, KAD_PROTOCOL};
use futures::StreamExt;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, SwarmBuilder, gossipsub, kad, noise, tcp, yamux,
};

#[derive(NetworkBehaviour)]
pub struct HostileBehaviour {
    pub kad: kad::Behaviour<kad::store::MemoryStore>,
    pub gossipsub: gossipsub::Behaviour,
}

pub struct Hostile {
    pub swarm: Swarm<HostileBehaviour>,
}

impl Hostile {
    pub fn new() -> Self {
        let swarm = bare_swarm(|key| {
            let peer = key.public().to_peer_id();
            let mut kad = kad::Behaviour::with_config(
                peer,
                kad::store::MemoryStore::new(peer),
                kad::Config::new(StreamProtocol::new(KAD_PROTOCOL)),
            );
            kad.set_mode(Some(kad::Mode::Server));
            let cfg = gossipsub::ConfigBuilder::default()
                .heartbeat_interval(Duration::from_millis(100))
                .build()
                .unwrap();
            let mut gossipsub =
                gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Signed(key.clone()), cfg)
                    .unwrap();
            gossipsub
                .subscribe(&gossipsub::IdentTopic::new(GOSSIP_TOPIC))
                .unwrap();
            HostileBehaviour { kad, gossipsub }
        });
        Self { swarm }
    }

    pub fn peer_id(&self) -> PeerId {
        *self.swarm.local_peer_id()
    }

    /// Listens on an ephemeral loopback port; returns the address to dial (with `/p2p/`).
    pub async fn listen(&mut self) -> Multiaddr {
        self.swarm
            .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
            .unwrap();
        loop {
            if let SwarmEvent::NewListenAddr { address, .. } = self.swarm.select_next_some().await {
                return address.with(libp2p::multiaddr::Protocol::P2p(self.peer_id()));
            }
        }
    }

    /// Keeps a raw record in this peer's own DHT store, served to whoever asks for its key.
    pub fn hold(&mut self, key: Vec<u8>, value: Vec<u8>) {
        kad::store::RecordStore::put(
            self.swarm.behaviour_mut().kad.store_mut(),
            kad::Record::new(key, value),
        )
        .unwrap();
    }

    /// Dials every address and drives the swarm until all connections are up.
    pub async fn connect(&mut self, addrs: &[Multiaddr]) {
        for a in addrs {
            self.swarm.dial(a.clone()).unwrap();
        }
        let mut up = 0;
        while up < addrs.len() {
            if let SwarmEvent::ConnectionEstablished { .. } = self.swarm.select_next_some().await {
                up += 1;
            }
        }
    }

    /// Sends `PUT_VALUE` for a raw record to `peers` and drives the swarm until the query ends.
    pub async fn put_raw(&mut self, key: Vec<u8>, value: Vec<u8>, peers: Vec<PeerId>) {
        let record = kad::Record::new(key, value);
        let id = self.swarm.behaviour_mut().kad.put_record_to(
            record,
            peers.into_iter(),
            kad::Quorum::One,
        );
        loop {
            if let SwarmEvent::Behaviour(HostileBehaviourEvent::Kad(
                kad::Event::OutboundQueryProgressed { id: got, step, .. },
            )) = self.swarm.select_next_some().await
                && got == id
                && step.last
            {
                return;
            }
        }
    }

    /// Publishes raw gossip, waiting (while driving the swarm) until a peer's subscription
    /// has arrived so that the publish has somewhere to go.
    pub async fn publish_raw(&mut self, data: Vec<u8>) {
        let topic = gossipsub::IdentTopic::new(GOSSIP_TOPIC);
        loop {
            match self
                .swarm
                .behaviour_mut()
                .gossipsub
                .publish(topic.clone(), data.clone())
            {
                Ok(_) => return,
                Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => {
                    let _ = self.swarm.select_next_some().await;
                }
                Err(e) => panic!("hostile publish: {e}"),
            }
        }
    }

    /// Publishes `messages` at `per_second`, driving the swarm in between (so they go out as
    /// they are made); returns how many gossipsub took to send. The first waits for a
    /// subscriber; publish errors afterwards (queues full) are counted, not fatal.
    pub async fn flood(&mut self, messages: Vec<Vec<u8>>, per_second: u32) -> usize {
        let topic = gossipsub::IdentTopic::new(GOSSIP_TOPIC);
        let mut messages = messages.into_iter();
        let Some(first) = messages.next() else {
            return 0;
        };
        self.publish_raw(first).await;
        let mut sent = 1;
        let mut tick = tokio::time::interval(Duration::from_secs(1) / per_second);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        for data in messages {
            loop {
                tokio::select! {
                    _ = tick.tick() => break,
                    _ = self.swarm.select_next_some() => {}
                }
            }
            if self
                .swarm
                .behaviour_mut()
                .gossipsub
                .publish(topic.clone(), data)
                .is_ok()
            {
                sent += 1;
            }
        }
        sent
    }

    /// Keeps the swarm running in the background (so queued messages go out and the
    /// connections stay up) and returns it when `stop` fires.
    pub fn drive(
        mut self,
        mut stop: tokio::sync::oneshot::Receiver<()>,
    ) -> tokio::task::JoinHandle<Self> {
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = self.swarm.select_next_some() => {}
                    _ = &mut stop => return self,
                }
            }
        })
    }
}

/// How one identity's connections in a [`connection_flood`] turned out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dials {
    /// Dials that ended, in a connection or an error.
    pub resolved: usize,
    /// Connections open now.
    pub live: usize,
}

/// A running flood of bare connections (no protocol spoken on them).
pub struct ConnectionFlood {
    pub dials: std::sync::Arc<std::sync::Mutex<Vec<Dials>>>,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl ConnectionFlood {
    /// Opens `per_identity` connections from each of `identities` fresh identities to
    /// `target` and keeps whatever it accepts open until [`ConnectionFlood::stop`].
    pub fn start(target: &Multiaddr, identities: usize, per_identity: usize) -> Self {
        let dials = std::sync::Arc::new(std::sync::Mutex::new(vec![Dials::default(); identities]));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let tasks = (0..identities)
            .map(|i| {
                let (target, dials, mut stopped) = (target.clone(), dials.clone(), stopped.clone());
                tokio::spawn(async move {
                    let mut swarm = SwarmBuilder::with_new_identity()
                        .with_tokio()
                        .with_tcp(
                            tcp::Config::default(),
                            noise::Config::new,
                            yamux::Config::default,
                        )
                        .unwrap()
                        .with_behaviour(|_| libp2p::swarm::dummy::Behaviour)
                        .unwrap()
                        .with_swarm_config(|c| {
                            c.with_idle_connection_timeout(Duration::from_secs(300))
                        })
                        .build();
                    for _ in 0..per_identity {
                        swarm.dial(target.clone()).unwrap();
                    }
                    loop {
                        tokio::select! {
                            event = swarm.select_next_some() => {
                                let mut all = dials.lock().unwrap();
                                let d = &mut all[i];
                                match event {
                                    SwarmEvent::ConnectionEstablished { .. } => {
                                        d.resolved += 1;
                                        d.live += 1;
                                    }
                                    SwarmEvent::ConnectionClosed { .. } => d.live -= 1,
                                    SwarmEvent::OutgoingConnectionError { .. } => d.resolved += 1,
                                    _ => {}
                                }
                            }
                            _ = stopped.changed() => return,
                        }
                    }
                })
            })
            .collect();
        Self { dials, stop, tasks }
    }

    /// The flood's state now.
    pub fn dials(&self) -> Vec<Dials> {
        self.dials.lock().unwrap().clone()
    }

    /// Closes every connection.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            t.await.unwrap();
        }
    }
}

/// Asks for chunks on the fetch protocol and never reads a chunk that comes: it reads a
/// response's length, takes a short one (a refusal) and leaves a long one (a chunk) unread on
/// its stream, which stays open. The node that answers holds what it wrote.
#[derive(Clone, Default)]
pub struct NeverReads;

/// How each request of a [`NeverReads`] peer ended (a chunk it never reads never ends).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeldRequests {
    pub refused_busy: usize,
    pub refused_other: usize,
    pub failed: usize,
}

impl libp2p::request_response::Codec for NeverReads {
    type Protocol = StreamProtocol;
    type Request = agora_protocol::messages::FetchRequest;
    type Response = agora_protocol::messages::FetchResponse;

    async fn read_request<T>(
        &mut self,
        _: &StreamProtocol,
        _: &mut T,
    ) -> std::io::Result<Self::Request>
    where
        T: futures::AsyncRead + Unpin + Send,
    {
        Err(std::io::Error::other("this peer asks, it does not answer"))
    }

    async fn read_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> std::io::Result<Self::Response>
    where
        T: futures::AsyncRead + Unpin + Send,
    {
        use agora_protocol::codec::Wire;
        use futures::AsyncReadExt;
        let mut header = [0u8; 4];
        io.read_exact(&mut header).await?;
        let len = u32::from_be_bytes(header) as usize;
        if len > 64 {
            return futures::future::pending().await;
        }
        let mut body = vec![0u8; len];
        io.read_exact(&mut body).await?;
        Self::Response::from_wire(&body).map_err(std::io::Error::other)
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Self::Request,
    ) -> std::io::Result<()>
    where
        T: futures::AsyncWrite + Unpin + Send,
    {
        use agora_protocol::codec::Wire;
        use futures::AsyncWriteExt;
        let body = req.to_wire();
        io.write_all(&(body.len() as u32).to_be_bytes()).await?;
        io.write_all(&body).await?;
        io.close().await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        _: &mut T,
        _: Self::Response,
    ) -> std::io::Result<()>
    where
        T: futures::AsyncWrite + Unpin + Send,
    {
        Err(std::io::Error::other("this peer asks, it does not answer"))
    }
}

/// A peer that sends `requests` chunk requests at once to `target` and never reads the
/// chunks; returns its swarm's task, with the tally of how the requests ended so far.
pub async fn never_reads(
    target: &Multiaddr,
    requests: Vec<agora_protocol::messages::FetchRequest>,
) -> (
    std::sync::Arc<std::sync::Mutex<HeldRequests>>,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    use libp2p::request_response::{self, Event, Message, ProtocolSupport};
    let mut swarm = bare_swarm(|_| {
        request_response::Behaviour::with_codec(
            NeverReads,
            [(
                StreamProtocol::new(agora_protocol::messages::FETCH_PROTOCOL),
                ProtocolSupport::Outbound,
            )],
            request_response::Config::default()
                .with_request_timeout(Duration::from_secs(300))
                .with_max_concurrent_streams(requests.len()),
        )
    });
    swarm.dial(target.clone()).unwrap();
    let peer = loop {
        if let SwarmEvent::ConnectionEstablished { peer_id, .. } = swarm.select_next_some().await {
            break peer_id;
        }
    };
    for r in requests {
        swarm.behaviour_mut().send_request(&peer, r);
    }
    let tally = std::sync::Arc::new(std::sync::Mutex::new(HeldRequests::default()));
    let (stop, mut stopped) = tokio::sync::oneshot::channel();
    let counts = tally.clone();
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                event = swarm.select_next_some() => {
                    let mut t = counts.lock().unwrap();
                    match event {
                        SwarmEvent::Behaviour(Event::Message {
                            message: Message::Response { response, .. },
                            ..
                        }) => match response {
                            agora_protocol::messages::FetchResponse::Refused(
                                agora_protocol::messages::Refusal::Busy,
                            ) => t.refused_busy += 1,
                            _ => t.refused_other += 1,
                        },
                        SwarmEvent::Behaviour(Event::OutboundFailure { .. }) => t.failed += 1,
                        _ => {}
                    }
                }
                _ = &mut stopped => return,
            }
        }
    });
    (tally, stop, task)
}

/// A peer that answers catalog sync with junk: a summary whose buckets hold `junk`, the ids
/// of `junk` when asked for a bucket's, and one junk record per request for records. The
/// counters count the summaries asked for (syncs begun) and the requests for records.
pub async fn junk_syncer(
    junk: Vec<agora_protocol::records::CatalogRecord>,
) -> (
    Multiaddr,
    std::sync::Arc<[std::sync::atomic::AtomicUsize; 2]>,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    use agora_daemon::network::codec::WireCodec;
    use agora_protocol::messages::{BucketDigest, SyncRequest, SyncResponse};
    use libp2p::request_response::{self, Event, Message, ProtocolSupport};
    let mut swarm = bare_swarm(|_| {
        request_response::Behaviour::<WireCodec<SyncRequest, SyncResponse>>::new(
            [(
                StreamProtocol::new(agora_protocol::messages::SYNC_PROTOCOL),
                ProtocolSupport::Inbound,
            )],
            request_response::Config::default(),
        )
    });
    swarm
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .unwrap();
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            break address.with(libp2p::multiaddr::Protocol::P2p(*swarm.local_peer_id()));
        }
    };
    let rounds = std::sync::Arc::new([
        std::sync::atomic::AtomicUsize::new(0),
        std::sync::atomic::AtomicUsize::new(0),
    ]);
    let counter = rounds.clone();
    let (stop, mut stopped) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let ids: Vec<_> = junk.iter().map(|r| (r.id(), r)).collect();
        loop {
            let event = tokio::select! {
                e = swarm.select_next_some() => e,
                _ = &mut stopped => return,
            };
            let SwarmEvent::Behaviour(Event::Message {
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            }) = event
            else {
                continue;
            };
            let response = match request {
                SyncRequest::Summary => {
                    counter[0].fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let mut buckets = vec![BucketDigest::default(); 256];
                    for (id, _) in &ids {
                        let b = &mut buckets[id.as_bytes()[0] as usize];
                        b.count += 1;
                        b.digest = [0xAA; 32];
                    }
                    SyncResponse::Summary { buckets }
                }
                SyncRequest::Buckets { buckets } => SyncResponse::Ids {
                    ids: ids
                        .iter()
                        .map(|(id, _)| *id)
                        .filter(|id| buckets.contains(&id.as_bytes()[0]))
                        .collect(),
                },
                SyncRequest::Records { ids: asked } => {
                    counter[1].fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    SyncResponse::Records {
                        records: ids
                            .iter()
                            .filter(|(id, _)| asked.contains(id))
                            .take(1)
                            .map(|(_, r)| (*r).clone())
                            .collect(),
                    }
                }
            };
            let _ = swarm.behaviour_mut().send_response(channel, response);
        }
    });
    (addr, rounds, stop, task)
}

/// A swarm over TCP with the behaviour `make` builds for its key, its connections kept open
/// for five minutes.
fn bare_swarm<B: NetworkBehaviour + Send>(
    make: impl FnOnce(&libp2p::identity::Keypair) -> B,
) -> Swarm<B> {
    SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|key| make(key))
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(300)))
        .build()
}

#[derive(NetworkBehaviour)]
pub struct LiarBehaviour {
    have: libp2p::request_response::Behaviour<
        agora_daemon::network::codec::WireCodec<
            agora_protocol::messages::HaveRequest,
            agora_protocol::messages::HaveResponse,
        >,
    >,
    fetch: libp2p::request_response::Behaviour<
        agora_daemon::network::codec::WireCodec<
            agora_protocol::messages::FetchRequest,
            agora_protocol::messages::FetchResponse,
        >,
    >,
}

/// A peer that says, as a fetcher would, that it holds every chunk of an archive, and sends
/// noise of the right length for each chunk asked.
pub struct LyingHolder {
    pub peer: PeerId,
    pub addr: Multiaddr,
    task: tokio::task::JoinHandle<()>,
}

impl LyingHolder {
    pub async fn start(info: agora_protocol::records::ArchiveInfo) -> Self {
        use agora_protocol::messages::{
            FETCH_PROTOCOL, FetchResponse, HAVE_PROTOCOL, Have, HaveResponse,
        };
        use libp2p::request_response::{self as rr, ProtocolSupport};
        let mut swarm = bare_swarm(|_| LiarBehaviour {
            have: rr::Behaviour::with_codec(
                Default::default(),
                [(StreamProtocol::new(HAVE_PROTOCOL), ProtocolSupport::Full)],
                rr::Config::default(),
            ),
            fetch: rr::Behaviour::with_codec(
                Default::default(),
                [(StreamProtocol::new(FETCH_PROTOCOL), ProtocolSupport::Full)],
                rr::Config::default(),
            ),
        });
        let peer = *swarm.local_peer_id();
        swarm
            .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
            .unwrap();
        let addr = loop {
            if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                break address;
            }
        };
        let all = Have::of(&vec![true; info.chunks.len()]);
        let task = tokio::spawn(async move {
            loop {
                match swarm.select_next_some().await {
                    SwarmEvent::Behaviour(LiarBehaviourEvent::Have(rr::Event::Message {
                        message: rr::Message::Request { channel, .. },
                        ..
                    })) => {
                        let answer = HaveResponse::Have(all.clone());
                        let _ = swarm.behaviour_mut().have.send_response(channel, answer);
                    }
                    SwarmEvent::Behaviour(LiarBehaviourEvent::Fetch(rr::Event::Message {
                        message:
                            rr::Message::Request {
                                request, channel, ..
                            },
                        ..
                    })) => {
                        let size = info.chunk_range(request.index).map_or(1, |(_, s)| s);
                        let noise = FetchResponse::Chunk(vec![0x5a; size].into());
                        let _ = swarm.behaviour_mut().fetch.send_response(channel, noise);
                    }
                    _ => {}
                }
            }
        });
        Self { peer, addr, task }
    }

    pub fn stop(self) {
        self.task.abort();
    }
}
