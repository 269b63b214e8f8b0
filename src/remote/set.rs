//! The server set: one client per server, a probe task per server that brings it (back)
//! into the set, least-in-flight picking, deadlines, failover and hedging.
//!
//! Runs its own small tokio runtime; [`ServerSet::infer`] blocks the calling (worker)
//! thread on it. Locks: each server's `state` mutex is only held for bookkeeping, never
//! across an await.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::batch::{self, Batcher};
use super::grpc::GrpcClient;
use super::rest::RestClient;
use super::{
    Config, Data, Endpoint, Error, ErrorKind, ModelInfo, Request, Response, Tensor, Transport,
    check_id,
};

const PROBE_BACKOFF_MIN: Duration = Duration::from_millis(100);
const PROBE_BACKOFF_MAX: Duration = Duration::from_secs(5);

enum Client {
    Grpc(GrpcClient),
    Rest(RestClient),
}

impl Client {
    async fn probe(&self, config: &Config) -> Result<ModelInfo, Error> {
        let ready = match self {
            Client::Grpc(c) => c.ready().await?,
            Client::Rest(c) => c.ready().await?,
        };
        if !ready {
            return Err(Error::new(ErrorKind::Unavailable, "server is not ready"));
        }
        match self {
            Client::Grpc(c) => c.model_metadata(&config.model, &config.model_version).await,
            Client::Rest(c) => c.model_metadata(&config.model, &config.model_version).await,
        }
    }

    async fn infer(&self, config: &Config, request: &Request) -> Result<Response, Error> {
        let response = match self {
            Client::Grpc(c) => {
                c.infer(&config.model, &config.model_version, request)
                    .await?
            }
            Client::Rest(c) => {
                c.infer(&config.model, &config.model_version, request)
                    .await?
            }
        };
        check_id(request, &response)?;
        Ok(response)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    /// Not probed yet.
    Starting,
    Healthy,
    Down,
}

struct ServerState {
    health: Health,
    in_flight: usize,
    requests: u64,
    errors: u64,
    /// Consecutive times the server was taken out; sets the probe backoff.
    strikes: u32,
    latencies: crate::latency::Latencies,
    model: Option<Arc<ModelInfo>>,
    last_error: String,
}

struct Server {
    endpoint: Endpoint,
    client: Client,
    state: Mutex<ServerState>,
    /// Wakes the probe task when the server is taken out.
    wake_probe: Notify,
}

impl Server {
    fn state(&self) -> MutexGuard<'_, ServerState> {
        crate::glue::lock(&self.state)
    }
}

pub(super) struct Inner {
    config: Config,
    servers: Vec<Server>,
    /// Notified whenever a server's health or in-flight count changes.
    changed: Notify,
    hedges: AtomicU64,
    stopping: AtomicBool,
    /// Bumped by [`ServerSet::cancel`]; requests started before give up.
    generation: AtomicU64,
    cancel: Notify,
}

/// Cancels the requests of one user of a shared set (one element: its flush or stop), and
/// not the others'.
#[derive(Debug, Default)]
pub struct Canceller {
    generation: AtomicU64,
    notify: Notify,
}

impl Canceller {
    /// What a request made now belongs to: requests of this generation or older give up at
    /// the next [`Canceller::cancel`].
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Makes every request started with this canceller give up at once.
    pub fn cancel(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.notify.notify_waiters();
    }
}

/// A server's figures for `stats`.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerFigures {
    pub url: String,
    pub healthy: bool,
    pub in_flight: u64,
    pub requests: u64,
    pub errors: u64,
    /// Over the last 1024 answers; zero before the first.
    pub p50: Duration,
    pub p99: Duration,
    /// Why the server was last taken out or refused a request; empty if never.
    pub last_error: String,
}

/// A frame to send: tightly packed rows of `width * channels` bytes.
#[derive(Debug, Clone)]
pub struct Image {
    pub id: String,
    pub height: usize,
    pub width: usize,
    pub channels: usize,
    pub pixels: Vec<u8>,
}

/// A successful request.
#[derive(Debug, Clone)]
pub struct Answer {
    pub response: Response,
    /// The URL of the server that answered.
    pub server: String,
    /// Whether the answer came from a hedged copy.
    pub hedged: bool,
}

/// The tensor shape for a frame, as the model's first input asks: `[H, W, C]` by default,
/// `[1, H, W, C]` for a 4-dimensional input, `[H*W*C]` for a flat one, `[H, W*C]` for two
/// dimensions. Fixed dimensions must agree with the frame.
pub fn request_for(image: Image, info: &ModelInfo) -> Result<Request, Error> {
    let (h, w, c) = (
        image.height as i64,
        image.width as i64,
        image.channels as i64,
    );
    let input = info.inputs.first();
    let declared = input.map(|i| i.shape.as_slice()).unwrap_or(&[]);
    let shape = match declared.len() {
        4 => vec![1, h, w, c],
        2 => vec![h, w * c],
        1 => vec![h * w * c],
        _ => vec![h, w, c],
    };
    if !declared.is_empty()
        && declared
            .iter()
            .zip(&shape)
            .any(|(&want, &have)| want >= 0 && want != have)
    {
        return Err(Error::new(
            ErrorKind::Rejected,
            format!(
                "the model's input shape {declared:?} does not fit a {}x{}x{} frame ({shape:?})",
                image.height, image.width, image.channels
            ),
        ));
    }
    Ok(Request {
        id: image.id,
        inputs: vec![Tensor {
            name: input.map_or_else(|| "frame".to_string(), |i| i.name.clone()),
            datatype: "UINT8".into(),
            shape,
            data: Data::U8(image.pixels.into()),
        }],
    })
}

/// Counts a request in flight on one server for as long as it lives (a dropped hedge
/// included).
struct InFlight<'a> {
    inner: &'a Inner,
    index: usize,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.inner.servers[self.index].state().in_flight -= 1;
        self.inner.changed.notify_waiters();
    }
}

enum Pick {
    Server(usize),
    /// Nothing free now, but a server may become free or healthy.
    Wait,
    /// Every server is down.
    None,
}

impl Inner {
    /// Returns when the set is cancelled or closed since `generation`, or the canceller has
    /// cancelled since the generation given with it.
    async fn cancelled(&self, generation: u64, canceller: Option<(&Canceller, u64)>) {
        let (own, canceller) = (canceller.map(|c| c.1), canceller.map(|c| c.0));
        loop {
            let notified = self.cancel.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let mut mine = std::pin::pin!(canceller.map(|c| c.notify.notified()));
            // Registered before the generations are read: a cancel in between is not missed.
            if let Some(n) = mine.as_mut().as_pin_mut() {
                n.enable();
            }
            if self.generation.load(Ordering::Acquire) != generation
                || self.stopping.load(Ordering::Acquire)
                || canceller
                    .zip(own)
                    .is_some_and(|(c, g)| c.generation.load(Ordering::Acquire) != g)
            {
                return;
            }
            let mine = async {
                match mine.as_mut().as_pin_mut() {
                    Some(n) => n.await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = notified => {}
                _ = mine => {}
            }
        }
    }

    /// One request for a batch of frames (no hedging: a batch is one request), on the
    /// healthy server with the fewest requests in flight.
    pub(super) async fn infer_batch(
        &self,
        images: Vec<Image>,
        size: usize,
    ) -> Result<Answer, Error> {
        if self.stopping.load(Ordering::Acquire) {
            return Err(Error::new(ErrorKind::Cancelled, "the server set is closed"));
        }
        let deadline = tokio::time::Instant::now() + self.config.request_timeout;
        let slot = self.acquire(&[], deadline).await?;
        let index = slot.index;
        let request = batch::batch_request(images, &self.model(index), size)?;
        let response = self.send(slot, &request).await?;
        Ok(self.answer(index, response, false))
    }

    /// Claims a slot on the healthy server with the fewest requests in flight, preferring
    /// those not in `avoid`; never one in `exclude`.
    fn pick(&self, avoid: &[usize], exclude: Option<usize>) -> Pick {
        // The choice is made server by server, then claimed under the chosen server's lock;
        // if another request claimed it in between (it is full now or went down), choose
        // again.
        loop {
            match self.choose(avoid, exclude) {
                Pick::Server(index) => {
                    let mut state = self.servers[index].state();
                    let max = self.config.max_in_flight;
                    if state.health == Health::Healthy && (max == 0 || state.in_flight < max) {
                        state.in_flight += 1;
                        return Pick::Server(index);
                    }
                }
                other => return other,
            }
        }
    }

    /// The best server to claim now, without claiming it.
    fn choose(&self, avoid: &[usize], exclude: Option<usize>) -> Pick {
        let max = self.config.max_in_flight;
        let mut best: Option<(bool, usize, usize)> = None;
        let mut may_wait = false;
        for (index, server) in self.servers.iter().enumerate() {
            if Some(index) == exclude {
                continue;
            }
            let state = server.state();
            match state.health {
                Health::Healthy => {}
                Health::Starting => {
                    may_wait = true;
                    continue;
                }
                Health::Down => continue,
            }
            if max > 0 && state.in_flight >= max {
                may_wait = true;
                continue;
            }
            let key = (avoid.contains(&index), state.in_flight, index);
            if best.is_none_or(|b| key < b) {
                best = Some(key);
            }
        }
        match best {
            Some((_, _, index)) => Pick::Server(index),
            None if may_wait => Pick::Wait,
            None => Pick::None,
        }
    }

    /// Waits for a server until `deadline`.
    async fn acquire(
        &self,
        avoid: &[usize],
        deadline: tokio::time::Instant,
    ) -> Result<InFlight<'_>, Error> {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.pick(avoid, None) {
                Pick::Server(index) => return Ok(InFlight { inner: self, index }),
                Pick::None => {
                    return Err(Error::new(ErrorKind::NoServer, "no server is healthy"));
                }
                Pick::Wait => {
                    if tokio::time::timeout_at(deadline, notified).await.is_err() {
                        return Err(Error::new(
                            ErrorKind::Timeout,
                            "no server was free within request-timeout",
                        ));
                    }
                }
            }
        }
    }

    /// One request to one server, bounded by `request-timeout`, with the bookkeeping.
    async fn send(&self, slot: InFlight<'_>, request: &Request) -> Result<Response, Error> {
        let server = &self.servers[slot.index];
        let started = Instant::now();
        let result = match tokio::time::timeout(
            self.config.request_timeout,
            server.client.infer(&self.config, request),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                format!("no answer within {:?}", self.config.request_timeout),
            )),
        };
        let taken_out = {
            let mut state = server.state();
            state.requests += 1;
            match &result {
                Ok(_) => {
                    state.latencies.record(started.elapsed().as_nanos() as u64);
                    state.strikes = 0;
                    false
                }
                Err(err) => {
                    state.errors += 1;
                    state.last_error = err.message.clone();
                    let out = err.takes_server_out() && state.health == Health::Healthy;
                    if out {
                        state.health = Health::Down;
                        state.strikes = state.strikes.saturating_add(1);
                    }
                    out
                }
            }
        };
        // Frees the slot (which locks the state again) and wakes waiters.
        drop(slot);
        if taken_out {
            server.wake_probe.notify_one();
        }
        result.map_err(|err| Error {
            message: format!("{}: {}", server.endpoint.url, err.message),
            ..err
        })
    }

    fn answer(&self, index: usize, response: Response, hedged: bool) -> Answer {
        Answer {
            response,
            server: self.servers[index].endpoint.url.clone(),
            hedged,
        }
    }

    async fn infer(&self, image: Image, avoid: &mut Vec<usize>) -> Result<Answer, Error> {
        let deadline = tokio::time::Instant::now() + self.config.request_timeout;
        let first = self.acquire(avoid, deadline).await?;
        let first_index = first.index;
        let request = self.request_for(first_index, image)?;
        let a = self.send(first, &request);
        tokio::pin!(a);
        let Some(hedge_after) = self.config.hedge_after else {
            return a
                .await
                .map(|r| self.answer(first_index, r, false))
                .inspect_err(|_| {
                    avoid.push(first_index);
                });
        };
        tokio::select! {
            result = &mut a => {
                return result.map(|r| self.answer(first_index, r, false)).inspect_err(|_| {
                    avoid.push(first_index);
                });
            }
            _ = tokio::time::sleep(hedge_after) => {}
        }
        let second = match self.pick(avoid, Some(first_index)) {
            Pick::Server(index) => InFlight { inner: self, index },
            Pick::Wait | Pick::None => {
                return a
                    .await
                    .map(|r| self.answer(first_index, r, false))
                    .inspect_err(|_| {
                        avoid.push(first_index);
                    });
            }
        };
        let second_index = second.index;
        self.hedges.fetch_add(1, Ordering::Relaxed);
        let b = self.send(second, &request);
        tokio::pin!(b);
        tokio::select! {
            result = &mut a => match result {
                Ok(r) => Ok(self.answer(first_index, r, false)),
                Err(_) => {
                    avoid.push(first_index);
                    b.await.map(|r| self.answer(second_index, r, true)).inspect_err(|_| {
                        avoid.push(second_index);
                    })
                }
            },
            result = &mut b => match result {
                Ok(r) => Ok(self.answer(second_index, r, true)),
                Err(_) => {
                    avoid.push(second_index);
                    a.await.map(|r| self.answer(first_index, r, false)).inspect_err(|_| {
                        avoid.push(first_index);
                    })
                }
            },
        }
    }

    fn request_for(&self, index: usize, image: Image) -> Result<Request, Error> {
        request_for(image, &self.model(index))
    }

    /// The model's metadata as server `index` last gave it (empty before its first probe).
    fn model(&self, index: usize) -> Arc<ModelInfo> {
        self.servers[index]
            .state()
            .model
            .clone()
            .unwrap_or_default()
    }

    async fn probe_loop(self: Arc<Self>, index: usize) {
        let server = &self.servers[index];
        let mut failures: u32 = 0;
        loop {
            if self.stopping.load(Ordering::Acquire) {
                return;
            }
            let (health, strikes) = {
                let state = server.state();
                (state.health, state.strikes)
            };
            if health == Health::Healthy {
                server.wake_probe.notified().await;
                continue;
            }
            if health == Health::Down
                && let Some(backoff) = probe_backoff(strikes, failures)
            {
                tokio::time::sleep(backoff).await;
                if self.stopping.load(Ordering::Acquire) {
                    return;
                }
            }
            let probe = tokio::time::timeout(
                self.config.request_timeout,
                server.client.probe(&self.config),
            )
            .await
            .unwrap_or_else(|_| Err(Error::new(ErrorKind::Timeout, "probe timed out")));
            let mut state = server.state();
            match probe {
                Ok(model) => {
                    failures = 0;
                    state.health = Health::Healthy;
                    state.model = Some(Arc::new(model));
                }
                Err(err) => {
                    failures = failures.saturating_add(1);
                    state.health = Health::Down;
                    state.last_error = err.message;
                }
            }
            drop(state);
            self.changed.notify_waiters();
        }
    }
}

/// How long a server that is down waits before its next probe: not at all before the first
/// probe of a server never taken out; else 100 ms, doubling with each failed probe and each
/// time requests took it out again (`strikes`), up to 5 s — so that a server that answers
/// probes but fails requests does not flap.
pub(super) fn probe_backoff(strikes: u32, failures: u32) -> Option<Duration> {
    if strikes == 0 && failures == 0 {
        return None;
    }
    let exponent = strikes.saturating_add(failures).saturating_sub(1).min(16);
    Some((PROBE_BACKOFF_MIN * 2u32.pow(exponent)).min(PROBE_BACKOFF_MAX))
}

/// The servers of one `enrichpool`, with the runtime their requests run on.
pub struct ServerSet {
    inner: Arc<Inner>,
    runtime: Option<tokio::runtime::Runtime>,
    /// With `batch_size` above 1.
    batcher: Option<Arc<Batcher>>,
}

impl ServerSet {
    /// Builds a client per server and starts probing them. Fails on a configuration error
    /// (a bad URL or CA file), never because a server is down.
    pub fn start(config: Config) -> Result<ServerSet, String> {
        if config.servers.is_empty() {
            return Err("no server given".into());
        }
        if config.model.is_empty() {
            return Err("`model` is required with `servers`".into());
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("ordered-remote")
            .enable_all()
            .build()
            .map_err(|err| format!("starting the request runtime: {err}"))?;
        let connect_timeout = config.request_timeout;
        let mut servers = Vec::with_capacity(config.servers.len());
        for endpoint in &config.servers {
            let token = config.auth_token.as_deref();
            let roots = config.extra_roots_pem.as_deref();
            let client = {
                // tonic's lazy channel needs the runtime's context to be built.
                let _guard = runtime.enter();
                match endpoint.transport {
                    Transport::Grpc => Client::Grpc(GrpcClient::new(
                        endpoint,
                        connect_timeout,
                        token,
                        config.max_response_bytes,
                        roots,
                    )?),
                    Transport::Rest => Client::Rest(RestClient::new(
                        endpoint,
                        connect_timeout,
                        token,
                        config.max_response_bytes,
                        roots,
                    )?),
                }
            };
            servers.push(Server {
                endpoint: endpoint.clone(),
                client,
                state: Mutex::new(ServerState {
                    health: Health::Starting,
                    in_flight: 0,
                    requests: 0,
                    errors: 0,
                    strikes: 0,
                    latencies: Default::default(),
                    model: None,
                    last_error: String::new(),
                }),
                wake_probe: Notify::new(),
            });
        }
        let inner = Arc::new(Inner {
            config,
            servers,
            changed: Notify::new(),
            hedges: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            cancel: Notify::new(),
        });
        for index in 0..inner.servers.len() {
            runtime.spawn(inner.clone().probe_loop(index));
        }
        let batcher = (inner.config.batch_size > 1).then(|| {
            Arc::new(Batcher::new(
                inner.config.batch_size,
                inner.config.batch_timeout,
            ))
        });
        Ok(ServerSet {
            inner,
            runtime: Some(runtime),
            batcher,
        })
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        self.runtime.as_ref().expect("present until dropped")
    }

    /// Sends `image` to the best server, hedging if configured; blocks until an answer, an
    /// error or `request-timeout`. A server that failed is added to `avoid`, which the next
    /// attempt for the same frame passes back to be steered elsewhere.
    pub fn infer(&self, image: Image, avoid: &mut Vec<usize>) -> Result<Answer, Error> {
        self.infer_cancellable(image, avoid, None)
    }

    /// [`ServerSet::infer`], also given up when `canceller` has cancelled since the given
    /// generation (read when the frame came in: a cancel between then and now counts). With
    /// `batch_size` above 1 the frame goes in a batch of frames of its shape (see
    /// [`batch`]).
    pub fn infer_cancellable(
        &self,
        image: Image,
        avoid: &mut Vec<usize>,
        canceller: Option<(&Canceller, u64)>,
    ) -> Result<Answer, Error> {
        let inner = &self.inner;
        let generation = inner.generation.load(Ordering::Acquire);
        if inner.stopping.load(Ordering::Acquire) {
            return Err(Error::new(ErrorKind::Cancelled, "the server set is closed"));
        }
        let cancelled = || Error::new(ErrorKind::Cancelled, "cancelled (flush or stop)");
        if let Some(batcher) = &self.batcher {
            let reply = batcher.join(inner, self.runtime(), image);
            return self.runtime().block_on(async {
                tokio::select! {
                    answer = reply => answer.unwrap_or_else(|_| Err(cancelled())),
                    _ = inner.cancelled(generation, canceller) => Err(cancelled()),
                }
            });
        }
        self.runtime().block_on(async {
            tokio::select! {
                result = inner.infer(image, avoid) => result,
                _ = inner.cancelled(generation, canceller) => Err(cancelled()),
            }
        })
    }

    /// Batches sent and the frames they carried (0, 0 without batching).
    pub fn batch_figures(&self) -> (u64, u64) {
        self.batcher.as_ref().map_or((0, 0), |b| b.figures())
    }

    /// With `batch_size` above 1: waits up to `wait` for a healthy server and checks that its
    /// model has a batch dimension. `Err` (with the model's input shape) when it has none;
    /// `Ok` when it has, or no server answered in time (then each request checks).
    pub fn check_batching(&self, wait: Duration) -> Result<(), String> {
        let size = self.inner.config.batch_size;
        if size <= 1 || !self.wait_healthy(wait) {
            return Ok(());
        }
        for server in &self.inner.servers {
            let model = server.state().model.clone();
            if let Some(model) = model
                && !batch::has_batch_dimension(&model)
            {
                return Err(batch::no_batch_dimension(&model, size));
            }
        }
        Ok(())
    }

    /// Makes every request in progress give up at once (a flush, a stop); the requests'
    /// in-flight slots are freed, the servers stay in the set.
    pub fn cancel(&self) {
        self.inner.generation.fetch_add(1, Ordering::AcqRel);
        self.inner.cancel.notify_waiters();
    }

    /// Cancels what is in progress and refuses new requests (the element is stopping).
    pub fn close(&self) {
        self.inner.stopping.store(true, Ordering::Release);
        self.cancel();
        for server in &self.inner.servers {
            server.wake_probe.notify_one();
        }
    }

    /// Blocks until at least one server is healthy or `timeout` passes.
    pub fn wait_healthy(&self, timeout: Duration) -> bool {
        let inner = &self.inner;
        self.runtime().block_on(async {
            let deadline = tokio::time::Instant::now() + timeout;
            loop {
                let notified = inner.changed.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if inner
                    .servers
                    .iter()
                    .any(|s| s.state().health == Health::Healthy)
                {
                    return true;
                }
                if tokio::time::timeout_at(deadline, notified).await.is_err() {
                    return false;
                }
            }
        })
    }

    /// Second copies sent so far.
    pub fn hedges(&self) -> u64 {
        self.inner.hedges.load(Ordering::Relaxed)
    }

    pub fn figures(&self) -> Vec<ServerFigures> {
        self.inner
            .servers
            .iter()
            .map(|server| {
                let state = server.state();
                let [p50, p99] = state.latencies.percentiles([50, 99]);
                ServerFigures {
                    url: server.endpoint.url.clone(),
                    healthy: state.health == Health::Healthy,
                    in_flight: state.in_flight as u64,
                    requests: state.requests,
                    errors: state.errors,
                    p50: Duration::from_nanos(p50),
                    p99: Duration::from_nanos(p99),
                    last_error: state.last_error.clone(),
                }
            })
            .collect()
    }
}

impl std::fmt::Debug for ServerSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerSet")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Drop for ServerSet {
    fn drop(&mut self) {
        self.inner.stopping.store(true, Ordering::Release);
        for server in &self.inner.servers {
            server.wake_probe.notify_one();
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

#[cfg(test)]
impl ServerSet {
    pub(super) fn inner_config_for_tests(&self) -> &Config {
        &self.inner.config
    }
}
