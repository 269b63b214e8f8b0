//! The REST client: `/v2/health/ready`, `/v2/models/{model}[/versions/{v}]`, and
//! `POST …/infer` in JSON, or with the binary tensor extension when the server's metadata
//! (`GET /v2`) lists `binary_tensor_data`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use serde_json::{Value, json};

use super::{Endpoint, Error, ErrorKind, ModelInfo, Request, Response, Tensor, TensorInfo};

const BINARY_HEADER: &str = "Inference-Header-Content-Length";
const BINARY_EXTENSION: &str = "binary_tensor_data";

pub(super) struct RestClient {
    client: reqwest::Client,
    base: String,
    auth: Option<HeaderValue>,
    max_response_bytes: usize,
    /// Whether the server listed the binary tensor extension at the last probe.
    binary: AtomicBool,
}

fn transport_error(err: reqwest::Error) -> Error {
    let kind = if err.is_timeout() {
        ErrorKind::Timeout
    } else {
        ErrorKind::Unavailable
    };
    // reqwest's messages name the URL, never headers: the token stays out.
    let message = format!("HTTP: {}", super::with_causes(&err));
    Error::new(kind, message)
}

fn bad(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::BadResponse, message)
}

impl RestClient {
    pub(super) fn new(
        endpoint: &Endpoint,
        connect_timeout: Duration,
        auth_token: Option<&str>,
        max_response_bytes: usize,
        extra_roots_pem: Option<&[u8]>,
    ) -> Result<RestClient, String> {
        // Our own rustls configuration (ring provider) even for plain HTTP: reqwest wants
        // one, and a plugin must not install a process-wide default provider.
        let tls = super::tls_config(
            extra_roots_pem.filter(|_| endpoint.tls),
            &[b"h2", b"http/1.1"],
        )?;
        let client = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .tcp_nodelay(true)
            .no_proxy()
            .tls_backend_preconfigured(tls)
            .build()
            .map_err(|err| format!("`{}`: {err}", endpoint.url))?;
        let auth = auth_token
            .map(|token| {
                let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
                    .map_err(|_| "auth-token holds characters a header cannot carry".to_string())?;
                value.set_sensitive(true);
                Ok::<_, String>(value)
            })
            .transpose()?;
        Ok(RestClient {
            client,
            base: endpoint.base.clone(),
            auth,
            max_response_bytes,
            binary: AtomicBool::new(false),
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let builder = self.client.request(method, format!("{}{path}", self.base));
        match &self.auth {
            Some(auth) => builder.header(AUTHORIZATION, auth.clone()),
            None => builder,
        }
    }

    /// Sends and reads the whole body, refusing more than `max_response_bytes`.
    async fn send(
        &self,
        builder: reqwest::RequestBuilder,
    ) -> Result<(reqwest::header::HeaderMap, Vec<u8>), Error> {
        let mut response = builder.send().await.map_err(transport_error)?;
        let status = response.status();
        if let Some(len) = response.content_length()
            && len as usize > self.max_response_bytes
        {
            return Err(bad(format!(
                "response of {len} bytes exceeds max-response-bytes ({})",
                self.max_response_bytes
            )));
        }
        let headers = response.headers().clone();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
            if body.len() + chunk.len() > self.max_response_bytes {
                return Err(bad(format!(
                    "response exceeds max-response-bytes ({})",
                    self.max_response_bytes
                )));
            }
            body.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
            let kind = if status.is_client_error() {
                ErrorKind::Rejected
            } else {
                ErrorKind::Unavailable
            };
            return Err(Error::new(kind, format!("HTTP {status}: {text}")));
        }
        Ok((headers, body))
    }

    fn model_path(model: &str, version: &str) -> String {
        if version.is_empty() {
            format!("/v2/models/{model}")
        } else {
            format!("/v2/models/{model}/versions/{version}")
        }
    }

    pub(super) async fn ready(&self) -> Result<bool, Error> {
        let ready = match self
            .send(self.request(reqwest::Method::GET, "/v2/health/ready"))
            .await
        {
            Ok(_) => true,
            Err(err) if err.kind == ErrorKind::Rejected => false,
            Err(err) => return Err(err),
        };
        if ready {
            // Which extensions the server has; a server without `GET /v2` has none.
            let binary = match self.send(self.request(reqwest::Method::GET, "/v2")).await {
                Ok((_, body)) => serde_json::from_slice::<Value>(&body)
                    .ok()
                    .and_then(|v| {
                        v.get("extensions")?
                            .as_array()
                            .map(|exts| exts.iter().any(|e| e.as_str() == Some(BINARY_EXTENSION)))
                    })
                    .unwrap_or(false),
                Err(_) => false,
            };
            self.binary.store(binary, Ordering::Relaxed);
        }
        Ok(ready)
    }

    pub(super) fn uses_binary(&self) -> bool {
        self.binary.load(Ordering::Relaxed)
    }

    pub(super) async fn model_metadata(
        &self,
        model: &str,
        version: &str,
    ) -> Result<ModelInfo, Error> {
        let (_, body) = self
            .send(self.request(reqwest::Method::GET, &Self::model_path(model, version)))
            .await?;
        let value: Value = serde_json::from_slice(&body)
            .map_err(|err| bad(format!("model metadata is not JSON: {err}")))?;
        let tensors = |key: &str| -> Vec<TensorInfo> {
            value
                .get(key)
                .and_then(Value::as_array)
                .map(|items| {
                    items
                        .iter()
                        .map(|t| TensorInfo {
                            name: t["name"].as_str().unwrap_or_default().to_string(),
                            datatype: t["datatype"].as_str().unwrap_or_default().to_string(),
                            shape: t["shape"]
                                .as_array()
                                .map(|dims| dims.iter().filter_map(Value::as_i64).collect())
                                .unwrap_or_default(),
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        Ok(ModelInfo {
            inputs: tensors("inputs"),
            outputs: tensors("outputs"),
        })
    }

    pub(super) async fn infer(
        &self,
        model: &str,
        version: &str,
        request: &Request,
    ) -> Result<Response, Error> {
        let path = format!("{}/infer", Self::model_path(model, version));
        let builder = self.request(reqwest::Method::POST, &path);
        let builder = if self.uses_binary() {
            let (header, body) = encode_binary(request);
            builder
                .header(CONTENT_TYPE, "application/octet-stream")
                .header(BINARY_HEADER, header)
                .body(body)
        } else {
            builder
                .header(CONTENT_TYPE, "application/json")
                .body(encode_json(request))
        };
        let (headers, body) = self.send(builder).await?;
        let json_len = headers
            .get(BINARY_HEADER)
            .map(|v| {
                v.to_str()
                    .ok()
                    .and_then(|s| s.trim().parse::<usize>().ok())
                    .filter(|&n| n <= body.len())
                    .ok_or_else(|| bad(format!("bad {BINARY_HEADER} header")))
            })
            .transpose()?;
        decode_response(&body, json_len)
    }
}

fn tensor_header(t: &Tensor) -> Value {
    json!({"name": t.name, "datatype": t.datatype, "shape": t.shape})
}

pub(super) fn encode_json(request: &Request) -> Vec<u8> {
    // Written by hand: a frame is hundreds of thousands of numbers, and going through
    // `serde_json::Value` per element costs more than the request itself.
    let mut out = Vec::with_capacity(
        64 + request
            .inputs
            .iter()
            .map(|t| t.data.len() * 4 + 64)
            .sum::<usize>(),
    );
    out.extend_from_slice(b"{\"id\":");
    serde_json::to_writer(&mut out, &request.id).expect("strings encode");
    out.extend_from_slice(b",\"inputs\":[");
    for (i, t) in request.inputs.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let header = serde_json::to_vec(&tensor_header(t)).expect("JSON values encode");
        // The header without its closing brace, then the data.
        out.extend_from_slice(&header[..header.len() - 1]);
        out.extend_from_slice(b",\"data\":");
        match &t.data {
            super::Data::U8(bytes) => {
                out.push(b'[');
                for (j, &b) in bytes.iter().enumerate() {
                    if j > 0 {
                        out.push(b',');
                    }
                    if b >= 100 {
                        out.push(b'0' + b / 100);
                    }
                    if b >= 10 {
                        out.push(b'0' + (b / 10) % 10);
                    }
                    out.push(b'0' + b % 10);
                }
                out.push(b']');
            }
            _ => serde_json::to_writer(&mut out, &t.json_data()).expect("JSON values encode"),
        }
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
    out
}

/// The JSON header's length and the whole body of a binary-extension request.
pub(super) fn encode_binary(request: &Request) -> (usize, Vec<u8>) {
    let raws: Vec<_> = request.inputs.iter().map(Tensor::raw).collect();
    let inputs: Vec<Value> = request
        .inputs
        .iter()
        .zip(&raws)
        .map(|(t, raw)| {
            let mut v = tensor_header(t);
            v["parameters"] = json!({"binary_data_size": raw.len()});
            v
        })
        .collect();
    let mut body = serde_json::to_vec(&json!({
        "id": request.id,
        "inputs": inputs,
        "parameters": {"binary_data_output": true},
    }))
    .expect("JSON values encode");
    let header = body.len();
    for raw in &raws {
        body.extend_from_slice(raw);
    }
    (header, body)
}

/// Decodes an inference response: JSON, or (with `json_len`) a JSON header followed by
/// the outputs' binary data in order.
pub(super) fn decode_response(body: &[u8], json_len: Option<usize>) -> Result<Response, Error> {
    let (header, mut binary) = match json_len {
        Some(n) => (&body[..n], &body[n..]),
        None => (body, &[][..]),
    };
    let value: Value = serde_json::from_slice(header)
        .map_err(|err| bad(format!("response is not JSON: {err}")))?;
    let id = match value.get("id") {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => String::new(),
        Some(other) => return Err(bad(format!("response id {other} is not a string"))),
    };
    let outputs = value
        .get("outputs")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("response has no `outputs` array"))?;
    let mut tensors = Vec::with_capacity(outputs.len());
    for out in outputs {
        let name = out["name"]
            .as_str()
            .ok_or_else(|| bad("output without a name"))?
            .to_string();
        let datatype = out["datatype"]
            .as_str()
            .ok_or_else(|| bad(format!("output `{name}` without a datatype")))?
            .to_string();
        let shape: Vec<i64> = out["shape"]
            .as_array()
            .ok_or_else(|| bad(format!("output `{name}` without a shape")))?
            .iter()
            .map(|d| {
                d.as_i64()
                    .ok_or_else(|| bad(format!("output `{name}`: bad shape")))
            })
            .collect::<Result<_, _>>()?;
        let tensor = match out
            .get("parameters")
            .and_then(|p| p.get("binary_data_size"))
            .and_then(Value::as_u64)
        {
            Some(size) => {
                let size = size as usize;
                if size > binary.len() {
                    return Err(bad(format!("output `{name}`: binary data truncated")));
                }
                let (raw, rest) = binary.split_at(size);
                binary = rest;
                Tensor::from_raw(name, datatype, shape, raw)?
            }
            None => {
                let data = out
                    .get("data")
                    .ok_or_else(|| bad(format!("output `{name}` without data")))?;
                Tensor::from_json(name, datatype, shape, data)?
            }
        };
        tensors.push(tensor);
    }
    Ok(Response {
        id,
        outputs: tensors,
    })
}
