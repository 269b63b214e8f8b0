//! Real inference servers for the remote-enrichment tests: MLServer (from the venv that
//! `./dev.sh test` makes, or `ORDERED_MLSERVER_VENV`) with the model in tests/remote/, the
//! misbehaving tests/remote/fake_server.py, and a TLS-terminating proxy. Everything binds
//! 127.0.0.1 on free ports and is stopped on drop.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MODEL_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/remote");
/// MLServer needs a few seconds to start; a loaded CI machine more.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// The venv's `bin` folder.
pub fn venv_bin() -> PathBuf {
    let venv = std::env::var_os("ORDERED_MLSERVER_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/build/mlserver-venv"))
        });
    let bin = venv.join("bin");
    assert!(
        bin.join("mlserver").exists(),
        "no MLServer venv at {} (./dev.sh test makes it; or set ORDERED_MLSERVER_VENV)",
        venv.display()
    );
    bin
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn scratch_dir(what: &str) -> PathBuf {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("gst-ordered-{what}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `cmd` to its end, with its stdout and stderr captured; kills it and fails the test if
/// it runs longer than `limit`.
pub fn output_within(mut cmd: Command, limit: Duration) -> std::process::Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the command starts");
    let read = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = read(Box::new(child.stdout.take().unwrap()));
    let stderr = read(Box::new(child.stderr.take().unwrap()));
    let until = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    std::process::Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// A plain HTTP GET on 127.0.0.1: the status code and body, if the server answered.
pub fn http_request(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.get(9..12)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Some((status, body.to_string()))
}

/// The status code of a GET.
pub fn http_status(port: u16, path: &str) -> Option<u16> {
    http_request(port, path).map(|(status, _)| status)
}

/// The body of a GET answered 200.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    http_request(port, path).and_then(|(status, body)| (status == 200).then_some(body))
}

/// One MLServer process serving the model `frames` over REST and gRPC.
pub struct MlServer {
    child: Option<Child>,
    pub http: u16,
    pub grpc: u16,
    metrics: u16,
    dir: PathBuf,
    env: Vec<(String, String)>,
    /// Also serves `detect` and `classify` (tests/remote/cascade.py).
    cascade: bool,
}

impl MlServer {
    /// A server of the cascade's two models besides `frames`: `detect` (boxes around the
    /// objects of a frame) and `classify` (what one crop shows), see tests/remote/cascade.py.
    pub fn start_cascade() -> MlServer {
        let mut server = MlServer {
            child: None,
            http: free_port(),
            grpc: free_port(),
            metrics: free_port(),
            dir: scratch_dir("mlserver"),
            env: Vec::new(),
            cascade: true,
        };
        server.launch();
        server.wait_ready();
        server
    }

    /// Starts without waiting for readiness (see [`MlServer::wait_ready`]), so that several
    /// start side by side. `env` sets the model's behaviour (see tests/remote/model.py).
    pub fn spawn(env: &[(&str, &str)]) -> MlServer {
        let dir = scratch_dir("mlserver");
        let mut server = MlServer {
            child: None,
            http: free_port(),
            grpc: free_port(),
            metrics: free_port(),
            dir,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            cascade: false,
        };
        server.launch();
        server
    }

    pub fn start(env: &[(&str, &str)]) -> MlServer {
        let mut server = Self::spawn(env);
        server.wait_ready();
        server
    }

    fn launch(&mut self) {
        let model = self.dir.join("frames");
        std::fs::create_dir_all(&model).unwrap();
        std::fs::copy(
            Path::new(MODEL_DIR).join("model.py"),
            model.join("model.py"),
        )
        .unwrap();
        std::fs::write(
            model.join("model-settings.json"),
            r#"{"name": "frames", "implementation": "model.FrameModel",
                "inputs": [{"name": "frame", "datatype": "UINT8", "shape": [-1, -1, -1]}]}"#,
        )
        .unwrap();
        if self.cascade {
            for (name, class) in [("detect", "DetectModel"), ("classify", "ClassifyModel")] {
                let dir = self.dir.join(name);
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::copy(
                    Path::new(MODEL_DIR).join("cascade.py"),
                    dir.join("cascade.py"),
                )
                .unwrap();
                std::fs::write(
                    dir.join("model-settings.json"),
                    format!(
                        r#"{{"name": "{name}", "implementation": "cascade.{class}",
                            "inputs": [{{"name": "frame", "datatype": "UINT8",
                                         "shape": [-1, -1, -1]}}]}}"#
                    ),
                )
                .unwrap();
            }
        }
        std::fs::write(
            self.dir.join("settings.json"),
            format!(
                r#"{{"host": "127.0.0.1", "http_port": {}, "grpc_port": {}, "metrics_port": {},
                    "parallel_workers": 0, "metrics_endpoint": "/metrics", "debug": false}}"#,
                self.http, self.grpc, self.metrics
            ),
        )
        .unwrap();
        let log = std::fs::File::create(self.dir.join("log")).unwrap();
        let child = Command::new(venv_bin().join("mlserver"))
            .arg("start")
            .arg(&self.dir)
            .current_dir(&self.dir)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("mlserver starts");
        self.child = Some(child);
    }

    /// Waits until the model answers ready over REST and the gRPC port accepts.
    pub fn wait_ready(&mut self) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!(
                    "mlserver exited ({status}) before it was ready:\n{}",
                    self.log()
                );
            }
            if http_status(self.http, "/v2/models/frames/ready") == Some(200)
                && TcpStream::connect(("127.0.0.1", self.grpc)).is_ok()
            {
                return;
            }
            assert!(
                started.elapsed() < START_TIMEOUT,
                "mlserver not ready after {START_TIMEOUT:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// MLServer's own measure of its inference requests: (count, total seconds). gRPC
    /// requests are timed by its `model_infer_request_duration` summary (the data plane),
    /// REST ones by `rest_server_request_duration_seconds` (the whole HTTP request).
    pub fn infer_duration(&self, rest: bool) -> Option<(f64, f64)> {
        let body = http_get(self.metrics, "/metrics")?;
        let (metric, label) = if rest {
            (
                "rest_server_request_duration_seconds",
                "path=\"/v2/models/{model_name}/infer\"",
            )
        } else {
            ("model_infer_request_duration", "model=\"frames\"")
        };
        let value = |suffix: &str| {
            let name = format!("{metric}_{suffix}{{");
            body.lines()
                .filter(|l| l.starts_with(&name) && l.contains(label))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .reduce(|a, b| a + b)
                .or(Some(0.0))
        };
        Some((value("count")?, value("sum")?))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    pub fn grpc_url(&self) -> String {
        format!("grpc://127.0.0.1:{}", self.grpc)
    }

    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http)
    }

    /// SIGKILL: the server disappears mid-request.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same ports.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
        self.wait_ready();
    }
}

impl Drop for MlServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// tests/remote/fake_server.py in one of its modes.
pub struct FakeServer {
    child: Child,
    pub http: u16,
    pub grpc: u16,
}

impl FakeServer {
    pub fn start(mode: &str) -> FakeServer {
        let (http, grpc) = (free_port(), free_port());
        let mut child = Command::new(venv_bin().join("python"))
            .arg(Path::new(MODEL_DIR).join("fake_server.py"))
            .args([mode, &http.to_string(), &grpc.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .expect("the fake server starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "the fake server did not start");
        FakeServer { child, http, grpc }
    }

    pub fn grpc_url(&self) -> String {
        format!("grpc://127.0.0.1:{}", self.grpc)
    }

    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http)
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CA of the test's own and a certificate it issued for `localhost` and `127.0.0.1`.
pub struct TestCa {
    pub ca_cert: rcgen::Certificate,
    pub leaf: rcgen::Certificate,
    pub leaf_key: rcgen::KeyPair,
}

impl TestCa {
    pub fn new() -> TestCa {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "gst-ordered test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        TestCa {
            ca_cert,
            leaf,
            leaf_key,
        }
    }
}

/// A TLS endpoint on 127.0.0.1 that forwards the decrypted bytes to a plain local port,
/// with a certificate for `localhost` and `127.0.0.1` issued by a CA of its own.
pub struct TlsProxy {
    pub port: u16,
    /// The CA's certificate, PEM, for `tls-ca-file`.
    pub ca_file: PathBuf,
    runtime: Option<tokio::runtime::Runtime>,
    dir: PathBuf,
}

impl TlsProxy {
    /// `alpn`: what the endpoint offers (`h2` in front of gRPC, `http/1.1` in front of REST).
    pub fn start(backend: u16, alpn: &[&[u8]]) -> TlsProxy {
        let TestCa {
            ca_cert,
            leaf,
            leaf_key,
        } = TestCa::new();
        let dir = scratch_dir("tls");
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, ca_cert.pem()).unwrap();

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                rustls_pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
            )
            .unwrap();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        runtime.spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(socket).await else {
                        return;
                    };
                    let Ok(mut plain) =
                        tokio::net::TcpStream::connect(("127.0.0.1", backend)).await
                    else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
        TlsProxy {
            port,
            ca_file,
            runtime: Some(runtime),
            dir,
        }
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
