//! A real MQTT broker (Debian's `mosquitto`) on 127.0.0.1 with a free port, and a real
//! subscriber (`mosquitto_sub`), both started and stopped by the test. A test crate that
//! includes this includes `servers.rs` too (its free ports, scratch folders and test CA).

// Each test crate that includes this uses what it needs of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::servers::{TestCa, free_port, scratch_dir};

/// TLS material and a user for a broker that requires both.
pub struct Secure {
    /// The CA's certificate, PEM (for `tls-ca-file` and the subscriber).
    pub ca_file: PathBuf,
    pub user: String,
    pub password: String,
}

pub struct Broker {
    pub port: u16,
    pub dir: PathBuf,
    pub secure: Option<Secure>,
    child: Option<Child>,
}

impl Broker {
    /// A broker that keeps its sessions on disk (`persistence`), so that a subscriber's
    /// session and the messages queued for it survive a stop (SIGTERM) and a start.
    pub fn start() -> Broker {
        let dir = scratch_dir("mosquitto");
        let port = free_port();
        let conf = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n\
             persistence_location {}/\nmax_queued_messages 0\nlog_dest stderr\n",
            dir.display()
        );
        std::fs::write(dir.join("mosquitto.conf"), conf).unwrap();
        let mut broker = Broker {
            port,
            dir,
            secure: None,
            child: None,
        };
        broker.launch();
        broker
    }

    /// A broker on TLS only (a certificate for 127.0.0.1 from a CA of the test's own) that
    /// takes only `user` with its password.
    pub fn start_secure() -> Broker {
        let dir = scratch_dir("mosquitto-tls");
        let TestCa {
            ca_cert,
            leaf,
            leaf_key,
        } = TestCa::new();
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, ca_cert.pem()).unwrap();
        std::fs::write(dir.join("server.pem"), leaf.pem()).unwrap();
        std::fs::write(dir.join("server.key"), leaf_key.serialize_pem()).unwrap();
        let (user, password) = ("camera", "s3cret \"quoted\"");
        let status = Command::new("mosquitto_passwd")
            .args(["-b", "-c"])
            .arg(dir.join("passwords"))
            .args([user, password])
            .status()
            .expect("mosquitto_passwd (Debian's mosquitto) runs");
        assert!(status.success());
        let port = free_port();
        let d = dir.display();
        let conf = format!(
            "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {d}/passwords\n\
             cafile {d}/ca.pem\ncertfile {d}/server.pem\nkeyfile {d}/server.key\n\
             log_dest stderr\n"
        );
        std::fs::write(dir.join("mosquitto.conf"), conf).unwrap();
        let mut broker = Broker {
            port,
            dir,
            secure: Some(Secure {
                ca_file,
                user: user.into(),
                password: password.into(),
            }),
            child: None,
        };
        broker.launch();
        broker
    }

    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("broker.log"))
            .unwrap();
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(self.dir.join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("mosquitto (Debian's mosquitto; ./dev.sh test installs it) starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen on {}: {}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the broker with SIGTERM (it saves its sessions) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, with what it saved.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("broker.log")).unwrap_or_default()
    }

    pub fn url(&self, topic: &str) -> String {
        let scheme = if self.secure.is_some() {
            "mqtts"
        } else {
            "mqtt"
        };
        format!("{scheme}://127.0.0.1:{}/{topic}", self.port)
    }

    /// The subscriber's and publisher's common arguments (host, port, TLS, user).
    fn client_args(&self, cmd: &mut Command) {
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]);
        if let Some(s) = &self.secure {
            cmd.arg("--cafile")
                .arg(&s.ca_file)
                .args(["-u", &s.user, "-P", &s.password]);
        }
    }

    /// A `credentials-file` for the secure broker's user.
    pub fn credentials_file(&self) -> PathBuf {
        let s = self.secure.as_ref().expect("a secure broker");
        let path = self.dir.join("credentials");
        std::fs::write(&path, format!("{}\n{}\n", s.user, s.password)).unwrap();
        path
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `mosquitto_sub` on a topic at QoS 1 with a persistent session: every message it
/// receives, in the order received.
pub struct Subscriber {
    child: Child,
    pub lines: Arc<Mutex<Vec<String>>>,
}

impl Subscriber {
    /// Subscribes and waits until a message published on `topic` arrives (so that the
    /// subscription is in place); that message is not kept.
    pub fn start(broker: &Broker, topic: &str) -> Subscriber {
        let mut cmd = Command::new("mosquitto_sub");
        broker.client_args(&mut cmd);
        let id = format!("sub-{}-{}", std::process::id(), broker.port);
        cmd.args(["-t", topic, "-q", "1", "-c", "-i", &id])
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().expect("mosquitto_sub starts");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let got = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                got.lock().unwrap().push(line);
            }
        });
        let sub = Subscriber { child, lines };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut publish = Command::new("mosquitto_pub");
            broker.client_args(&mut publish);
            let status = publish
                .args(["-t", topic, "-q", "1", "-m", "subscriber-ready"])
                .status()
                .expect("mosquitto_pub runs");
            assert!(status.success(), "mosquitto_pub failed: {}", broker.log());
            let ready = |sub: &Subscriber| {
                sub.lines
                    .lock()
                    .unwrap()
                    .iter()
                    .any(|l| l == "subscriber-ready")
            };
            let wait = Instant::now() + Duration::from_millis(500);
            while !ready(&sub) && Instant::now() < wait {
                std::thread::sleep(Duration::from_millis(10));
            }
            if ready(&sub) {
                break;
            }
            assert!(Instant::now() < deadline, "the subscriber never subscribed");
        }
        sub.lines
            .lock()
            .unwrap()
            .retain(|l| l != "subscriber-ready");
        sub
    }

    /// The records received so far (JSON lines).
    pub fn records(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits until `done(records)` holds, at most `limit`; returns the records.
    pub fn wait_for(&self, limit: Duration, done: impl Fn(&[String]) -> bool) -> Vec<String> {
        let deadline = Instant::now() + limit;
        loop {
            let records = self.records();
            if done(&records) || Instant::now() >= deadline {
                return records;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
