//! Where `metapublish` writes, from its `location`.

use std::fmt;
use std::path::PathBuf;

/// A parsed `location`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `file:///path`, or a plain path: JSON Lines into a file.
    File(PathBuf),
    /// `-`: JSON Lines on standard output.
    Stdout,
    /// `tcp://host:port`: JSON Lines to a TCP server.
    Tcp { host: String, port: u16 },
    /// `mqtt://host[:port]/topic` (1883) or `mqtts://…` (8883): one MQTT message per record.
    Mqtt {
        host: String,
        port: u16,
        topic: String,
        tls: bool,
    },
}

impl Target {
    pub fn parse(location: &str) -> Result<Target, String> {
        let location = location.trim();
        if location.is_empty() {
            return Err("no location set".into());
        }
        if location == "-" {
            return Ok(Target::Stdout);
        }
        let Some((scheme, _)) = location.split_once("://") else {
            return Ok(Target::File(PathBuf::from(location)));
        };
        let url = url::Url::parse(location).map_err(|err| format!("`{location}`: {err}"))?;
        let host = || {
            url.host_str()
                .filter(|h| !h.is_empty())
                .map(|h| h.trim_matches(['[', ']']).to_owned())
                .ok_or_else(|| format!("`{location}`: no host"))
        };
        match scheme {
            "file" => url
                .to_file_path()
                .map(Target::File)
                .map_err(|()| format!("`{location}` is not an absolute local file URI")),
            "tcp" => Ok(Target::Tcp {
                host: host()?,
                port: url
                    .port()
                    .ok_or_else(|| format!("`{location}`: tcp:// needs a port"))?,
            }),
            "mqtt" | "mqtts" => {
                let tls = scheme == "mqtts";
                let topic = url.path().trim_start_matches('/');
                let topic = percent_decode(topic);
                if topic.is_empty() {
                    return Err(format!("`{location}`: no topic (mqtt://host:port/topic)"));
                }
                if topic.contains(['+', '#']) || url.fragment().is_some() || url.query().is_some() {
                    return Err(format!(
                        "`{location}`: a topic to publish to has no wildcards (+, #) and no ?"
                    ));
                }
                if url.username() != "" || url.password().is_some() {
                    return Err(format!(
                        "`{location}`: credentials in the URI are not taken; use credentials-file"
                    ));
                }
                Ok(Target::Mqtt {
                    host: host()?,
                    port: url.port().unwrap_or(if tls { 8883 } else { 1883 }),
                    topic,
                    tls,
                })
            }
            other => Err(format!(
                "`{location}`: unknown scheme `{other}` (file, tcp, mqtt, mqtts, a path or -)"
            )),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::File(path) => write!(f, "file {}", path.display()),
            Target::Stdout => f.write_str("stdout"),
            Target::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
            Target::Mqtt {
                host,
                port,
                topic,
                tls,
            } => write!(
                f,
                "{}://{host}:{port}/{topic}",
                if *tls { "mqtts" } else { "mqtt" }
            ),
        }
    }
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("t={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse() {
        assert_eq!(Target::parse("-"), Ok(Target::Stdout));
        assert_eq!(
            Target::parse("out/demo.jsonl"),
            Ok(Target::File("out/demo.jsonl".into()))
        );
        assert_eq!(
            Target::parse("file:///tmp/a%20b.jsonl"),
            Ok(Target::File("/tmp/a b.jsonl".into()))
        );
        assert_eq!(
            Target::parse("tcp://127.0.0.1:5000"),
            Ok(Target::Tcp {
                host: "127.0.0.1".into(),
                port: 5000
            })
        );
        assert_eq!(
            Target::parse("mqtt://localhost/cams/one"),
            Ok(Target::Mqtt {
                host: "localhost".into(),
                port: 1883,
                topic: "cams/one".into(),
                tls: false
            })
        );
        assert_eq!(
            Target::parse("mqtts://[::1]:9000/t%2Fx"),
            Ok(Target::Mqtt {
                host: "::1".into(),
                port: 9000,
                topic: "t/x".into(),
                tls: true
            })
        );
        assert_eq!(
            Target::parse("mqtt://h:1/a").unwrap().to_string(),
            "mqtt://h:1/a"
        );
    }

    #[test]
    fn bad_locations_say_why() {
        for (location, says) in [
            ("", "no location"),
            ("tcp://127.0.0.1", "needs a port"),
            ("mqtt://127.0.0.1:1883", "no topic"),
            ("mqtt://127.0.0.1:1883/a/#", "wildcards"),
            ("mqtt://user:pw@127.0.0.1/a", "credentials-file"),
            ("http://127.0.0.1/", "unknown scheme"),
            ("file://relative/x", "absolute"),
        ] {
            let err = Target::parse(location).unwrap_err();
            assert!(err.contains(says), "{location}: {err}");
        }
    }
}
