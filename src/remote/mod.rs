//! Open Inference Protocol (KServe v2) clients and the server set behind `enrichpool`'s
//! `servers` property. GStreamer-free: frames come in as [`Tensor`]s, answers go out as
//! [`Tensor`]s; the element glue turns them into metas.
//!
//! - [`grpc`]: `inference.GRPCInferenceService` (ServerReady, ModelMetadata, ModelInfer with
//!   raw tensor contents) over tonic.
//! - [`rest`]: `/v2/health/ready`, `/v2/models/{model}`, `POST /v2/models/{model}/infer` in
//!   JSON, with the binary tensor extension where the server lists `binary_tensor_data`.
//! - [`set`]: the server set: least-in-flight balancing, health probes with backoff,
//!   failover, deadlines and hedging, per-server figures.

use std::fmt;
use std::time::Duration;

mod batch;
mod grpc;
mod proto;
mod rest;
mod set;
mod tensor;
#[cfg(test)]
mod tests;

pub use prost::bytes::Bytes;
pub use set::{Answer, Canceller, Image, ServerFigures, ServerSet, request_for};
pub use tensor::{Data, Tensor};

/// How a server is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Grpc,
    Rest,
}

/// One entry of `servers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// As given (normalised: no trailing slash); used in stats and in `EnrichmentMeta`.
    pub url: String,
    pub transport: Transport,
    pub tls: bool,
    /// `http(s)://host:port[/prefix]`, what the transport connects to.
    pub base: String,
}

impl Endpoint {
    /// Parses `grpc://`, `grpcs://`, `http://` or `https://` URLs.
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let url = url.trim().trim_end_matches('/');
        let parsed = url::Url::parse(url).map_err(|err| format!("`{url}`: {err}"))?;
        let (transport, tls) = match parsed.scheme() {
            "grpc" => (Transport::Grpc, false),
            "grpcs" => (Transport::Grpc, true),
            "http" => (Transport::Rest, false),
            "https" => (Transport::Rest, true),
            other => {
                return Err(format!(
                    "`{url}`: scheme `{other}` is not one of grpc, grpcs, http, https"
                ));
            }
        };
        let host = parsed
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("`{url}`: no host"))?;
        let port = parsed.port().unwrap_or(match (transport, tls) {
            (Transport::Grpc, _) => 8001,
            (Transport::Rest, false) => 80,
            (Transport::Rest, true) => 443,
        });
        if transport == Transport::Grpc && parsed.path() != "/" && !parsed.path().is_empty() {
            return Err(format!("`{url}`: a gRPC endpoint takes no path"));
        }
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        let path = parsed.path().trim_end_matches('/');
        let base = format!(
            "{}://{host}:{port}{path}",
            if tls { "https" } else { "http" }
        );
        Ok(Endpoint {
            url: url.to_string(),
            transport,
            tls,
            base,
        })
    }

    /// Parses a comma-separated list; empty entries are ignored.
    pub fn parse_list(list: &str) -> Result<Vec<Endpoint>, String> {
        list.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(Endpoint::parse)
            .collect()
    }
}

/// What the server set is told at start.
#[derive(Clone)]
pub struct Config {
    pub servers: Vec<Endpoint>,
    pub model: String,
    /// Empty for the server's choice.
    pub model_version: String,
    /// Bound on one request, connection included.
    pub request_timeout: Duration,
    /// Send a second copy to another server when the first has not answered by then.
    pub hedge_after: Option<Duration>,
    /// Requests in flight per server at most (0 = unbounded).
    pub max_in_flight: usize,
    /// Sent as `Authorization: Bearer …`; never logged.
    pub auth_token: Option<String>,
    /// Larger responses are refused.
    pub max_response_bytes: usize,
    /// PEM certificates trusted besides the usual web roots (for `grpcs://`, `https://`).
    pub extra_roots_pem: Option<Vec<u8>>,
    /// Frames of equal shape sent together in one request, along the model's batch
    /// dimension (1 = one frame per request).
    pub batch_size: usize,
    /// The longest a frame waits for a batch to fill.
    pub batch_timeout: Duration,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("servers", &self.servers)
            .field("model", &self.model)
            .field("model_version", &self.model_version)
            .field("request_timeout", &self.request_timeout)
            .field("hedge_after", &self.hedge_after)
            .field("max_in_flight", &self.max_in_flight)
            .field("auth_token", &self.auth_token.as_ref().map(|_| "<set>"))
            .field("max_response_bytes", &self.max_response_bytes)
            .field("batch_size", &self.batch_size)
            .field("batch_timeout", &self.batch_timeout)
            .finish()
    }
}

/// A model's inputs and outputs as its server describes them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelInfo {
    pub inputs: Vec<TensorInfo>,
    pub outputs: Vec<TensorInfo>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub datatype: String,
    /// -1 for a variable dimension.
    pub shape: Vec<i64>,
}

/// One inference request: the frame's sequence number is its `id`.
#[derive(Debug, Clone)]
pub struct Request {
    pub id: String,
    pub inputs: Vec<Tensor>,
}

/// A server's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub id: String,
    pub outputs: Vec<Tensor>,
}

/// Why a request did not give an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// No connection, connection lost, 5xx, gRPC `UNAVAILABLE`/`INTERNAL`…: the server is
    /// taken out until a probe brings it back.
    Unavailable,
    /// No answer within `request-timeout`: the server is taken out.
    Timeout,
    /// An answer that is not a valid response to the request (garbage, wrong `id`, too
    /// large): the server is taken out.
    BadResponse,
    /// The server refused this request (4xx, `INVALID_ARGUMENT`…): counted, the server stays.
    Rejected,
    /// No server is healthy.
    NoServer,
    /// Given up on because the element flushed or stopped.
    Cancelled,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
        }
    }

    /// Whether the server that produced it is taken out of the set.
    pub fn takes_server_out(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::Unavailable | ErrorKind::Timeout | ErrorKind::BadResponse
        )
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// An error with its causes, `: `-separated; transport errors say what went wrong
/// (refused, reset, certificate…) only in their causes.
pub(crate) fn with_causes(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

/// Checks a response against its request: the `id` must match.
pub(crate) fn check_id(request: &Request, response: &Response) -> Result<(), Error> {
    if response.id != request.id {
        return Err(Error::new(
            ErrorKind::BadResponse,
            format!(
                "response id `{}` does not match request id `{}`",
                response.id, request.id
            ),
        ));
    }
    Ok(())
}

/// Builds the rustls client configuration shared by both transports: the web roots plus
/// `extra_roots_pem`, with the ring provider.
pub(crate) fn tls_config(
    extra_roots_pem: Option<&[u8]>,
    alpn: &[&[u8]],
) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(pem) = extra_roots_pem {
        use rustls_pki_types::pem::PemObject;
        let mut added = 0;
        for cert in rustls_pki_types::CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|err| format!("reading CA certificates: {err}"))?;
            roots
                .add(cert)
                .map_err(|err| format!("adding a CA certificate: {err}"))?;
            added += 1;
        }
        if added == 0 {
            return Err("the CA file holds no PEM certificate".into());
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| format!("TLS set-up: {err}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}
