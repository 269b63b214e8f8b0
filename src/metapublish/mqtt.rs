//! MQTT 3.1.1 and 5 through rumqttc: one message per record, QoS 0 or 1.
//!
//! rumqttc's event loop replays unacknowledged messages after a reconnection only when the
//! broker kept the session, and keeps requests queued in its channel across one: either
//! would put old records after newer ones, or lose them. So each connection gets an event
//! loop of its own (clean session), dropped with it, and the records not yet confirmed are
//! handed to the next one, first and in order. A record is confirmed when its PUBLISH went
//! out (QoS 0) or its PUBACK came back (QoS 1).

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::publisher::{MIN_BACKOFF, Next, Options, Report, Shared};
use super::target::Target;

/// Records handed to a connection and not confirmed yet, at most (rumqttc's `inflight`
/// and request channel are sized above it, so handing over never waits).
const WINDOW: usize = 64;

/// What a connection's event loop tells the publisher.
enum Ev {
    Connected,
    /// A PUBLISH went out, with its packet id (0 at QoS 0).
    Sent(u16),
    /// A PUBACK came back; `Some(reason)` when the broker refused the message (MQTT 5).
    Acked(u16, Option<String>),
    Other,
}

/// One connection: a client to hand records to, its event loop running in a task.
struct Session {
    publish: Box<dyn Fn(Bytes) -> Result<(), String> + Send>,
    events: mpsc::UnboundedReceiver<Result<Ev, String>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn connect(options: &Options, host: &str, port: u16, topic: &str) -> Session {
    let (tx, events) = mpsc::unbounded_channel();
    let qos1 = options.qos >= 1;
    let transport = match &options.tls {
        Some(config) => {
            rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(config.clone()))
        }
        None => rumqttc::Transport::tcp(),
    };
    let topic = topic.to_owned();
    if options.mqtt_version == 5 {
        use rumqttc::v5::{self, mqttbytes::v5::Packet};
        let mut mo = v5::MqttOptions::new(&options.client_id, host, port);
        mo.set_transport(transport)
            .set_keep_alive(options.keep_alive)
            .set_clean_start(true)
            .set_outgoing_inflight_upper_limit(WINDOW as u16 + 1);
        if let Some((user, password)) = &options.credentials {
            mo.set_credentials(user, password);
        }
        let (client, mut eventloop) = v5::AsyncClient::new(mo, 2 * WINDOW);
        let qos = if qos1 {
            v5::mqttbytes::QoS::AtLeastOnce
        } else {
            v5::mqttbytes::QoS::AtMostOnce
        };
        let task = tokio::spawn(async move {
            loop {
                let ev = match eventloop.poll().await {
                    Ok(v5::Event::Incoming(Packet::ConnAck(_))) => Ok(Ev::Connected),
                    Ok(v5::Event::Outgoing(rumqttc::Outgoing::Publish(pkid))) => Ok(Ev::Sent(pkid)),
                    Ok(v5::Event::Incoming(Packet::PubAck(ack))) => {
                        use v5::mqttbytes::v5::PubAckReason::*;
                        let refused = match ack.reason {
                            Success | NoMatchingSubscribers => None,
                            other => Some(format!("the broker refused a record: {other:?}")),
                        };
                        Ok(Ev::Acked(ack.pkid, refused))
                    }
                    Ok(v5::Event::Incoming(Packet::Disconnect(d))) => {
                        Err(format!("the broker disconnected: {:?}", d.reason_code))
                    }
                    Ok(_) => Ok(Ev::Other),
                    Err(err) => Err(err.to_string()),
                };
                let end = ev.is_err();
                if tx.send(ev).is_err() || end {
                    return;
                }
            }
        });
        Session {
            publish: Box::new(move |payload| {
                client
                    .try_publish(topic.as_str(), qos, false, payload)
                    .map_err(|err| err.to_string())
            }),
            events,
            task,
        }
    } else {
        use rumqttc::{Event, Packet};
        let mut mo = rumqttc::MqttOptions::new(&options.client_id, host, port);
        mo.set_transport(transport)
            .set_keep_alive(options.keep_alive)
            .set_clean_session(true)
            .set_inflight(WINDOW as u16 + 1);
        if let Some((user, password)) = &options.credentials {
            mo.set_credentials(user, password);
        }
        let (client, mut eventloop) = rumqttc::AsyncClient::new(mo, 2 * WINDOW);
        let qos = if qos1 {
            rumqttc::QoS::AtLeastOnce
        } else {
            rumqttc::QoS::AtMostOnce
        };
        let task = tokio::spawn(async move {
            loop {
                let ev = match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => Ok(Ev::Connected),
                    Ok(Event::Outgoing(rumqttc::Outgoing::Publish(pkid))) => Ok(Ev::Sent(pkid)),
                    Ok(Event::Incoming(Packet::PubAck(ack))) => Ok(Ev::Acked(ack.pkid, None)),
                    Ok(Event::Incoming(Packet::Disconnect)) => {
                        Err("the broker disconnected".to_owned())
                    }
                    Ok(_) => Ok(Ev::Other),
                    Err(err) => Err(err.to_string()),
                };
                let end = ev.is_err();
                if tx.send(ev).is_err() || end {
                    return;
                }
            }
        });
        Session {
            publish: Box::new(move |payload: Bytes| {
                client
                    .try_publish(topic.as_str(), qos, false, payload.to_vec())
                    .map_err(|err| err.to_string())
            }),
            events,
            task,
        }
    }
}

/// A record handed to (or waiting for) a connection.
struct Flight {
    payload: Bytes,
    handed: bool,
    /// Its PUBLISH went out with this packet id.
    sent: Option<u16>,
    /// Its PUBACK came back (QoS 1): `Some(refused)`.
    acked: Option<bool>,
}

pub async fn run(shared: &Shared, options: &Options, report: &Report) {
    let Target::Mqtt {
        host, port, topic, ..
    } = &options.target
    else {
        unreachable!("run is only called for mqtt:// targets")
    };
    let name = options.target.to_string();
    let qos1 = options.qos >= 1;
    let mut flights: VecDeque<Flight> = VecDeque::new();
    let mut backoff = MIN_BACKOFF;
    // After a batch, the next one is taken no sooner than this (batch-interval).
    let mut linger: Option<tokio::time::Instant> = None;
    let mut connected_once = false;
    let mut reported_down = false;
    loop {
        let mut session = connect(options, host, *port, topic);
        let mut connected = false;
        let failure = loop {
            let room = WINDOW.saturating_sub(flights.len());
            tokio::select! {
                ev = session.events.recv() => match ev {
                    Some(Ok(Ev::Connected)) => {
                        connected = true;
                        backoff = MIN_BACKOFF;
                        reported_down = false;
                        if std::mem::replace(&mut connected_once, true) {
                            shared.reconnected();
                        }
                        // What the last connection did not confirm goes first.
                        let mut failed = None;
                        // (Those the broker acknowledged or refused are settled, behind an
                        // unacknowledged one: not sent twice.)
                        for f in flights.iter_mut().filter(|f| f.acked.is_none()) {
                            if let Err(err) = (session.publish)(f.payload.clone()) {
                                failed = Some(err);
                                break;
                            }
                            f.handed = true;
                        }
                        if let Some(err) = failed {
                            break err;
                        }
                    }
                    Some(Ok(Ev::Sent(pkid))) => {
                        if let Some(f) = flights.iter_mut().find(|f| f.handed && f.sent.is_none()) {
                            f.sent = Some(pkid);
                        }
                        if !qos1 {
                            let n = flights.iter().take_while(|f| f.sent.is_some()).count();
                            flights.drain(..n);
                            shared.published(n);
                        }
                    }
                    Some(Ok(Ev::Acked(pkid, refused))) => {
                        if let Some(f) = flights.iter_mut().find(|f| f.sent == Some(pkid) && f.acked.is_none()) {
                            f.acked = Some(refused.is_some());
                        }
                        if let Some(reason) = refused {
                            shared.error(&reason);
                        }
                        while let Some(refused) = flights.front().and_then(|f| f.acked) {
                            flights.pop_front();
                            if refused {
                                shared.lost(1);
                            } else {
                                shared.published(1);
                            }
                        }
                    }
                    Some(Ok(Ev::Other)) => {}
                    Some(Err(err)) => break err,
                    None => break "the connection ended".to_owned(),
                },
                next = async {
                    if let Some(deadline) = linger {
                        shared.linger_until(deadline).await;
                    }
                    shared.next(room).await
                }, if connected && room > 0 => match next {
                    Next::Batch(batch) => {
                        linger = (!options.batch_interval.is_zero())
                            .then(|| tokio::time::Instant::now() + options.batch_interval);
                        let mut failed = None;
                        for payload in batch {
                            let handed = failed.is_none()
                                && match (session.publish)(payload.clone()) {
                                    Ok(()) => true,
                                    Err(err) => {
                                        failed = Some(err);
                                        false
                                    }
                                };
                            flights.push_back(Flight { payload, handed, sent: None, acked: None });
                        }
                        if let Some(err) = failed {
                            break err;
                        }
                    }
                    Next::Stop => return,
                },
                _ = shared.cancel.cancelled() => return,
            }
        };
        drop(session);
        shared.error(format!("{name}: {failure}"));
        if !std::mem::replace(&mut reported_down, true) {
            report(format!(
                "lost or cannot reach {name}: {failure}; reconnecting"
            ));
        }
        for f in flights.iter_mut() {
            f.handed = false;
            f.sent = None;
            // An acknowledgement or a refusal stays: settled when those before it are.
        }
        if !shared.pause(backoff).await {
            return;
        }
        backoff = (backoff * 2).min(super::publisher::MAX_BACKOFF);
    }
}

/// Reads `credentials-file`: the user name on the first line, the password on the second.
pub fn read_credentials(path: &str) -> Result<(String, String), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| format!("reading credentials-file `{path}`: {err}"))?;
    let mut lines = text.lines();
    let user = lines.next().unwrap_or_default().trim_end_matches('\r');
    if user.is_empty() {
        return Err(format!(
            "credentials-file `{path}`: the first line is the user name, the second the password"
        ));
    }
    let password = lines.next().unwrap_or_default().trim_end_matches('\r');
    Ok((user.to_owned(), password.to_owned()))
}

/// How long a connection may be silent before the broker and we ping.
pub const KEEP_ALIVE: Duration = Duration::from_secs(5);
