//! The gRPC client: `inference.GRPCInferenceService` over tonic, frames as
//! `raw_input_contents`.

use std::time::Duration;

use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

use super::proto;
use super::{Data, Endpoint, Error, ErrorKind, ModelInfo, Request, Response, Tensor, TensorInfo};

const SERVICE: &str = "/inference.GRPCInferenceService/";

#[derive(Clone)]
pub(super) struct GrpcClient {
    channel: Channel,
    auth: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    max_response_bytes: usize,
}

fn status_error(status: tonic::Status) -> Error {
    use tonic::Code;
    let kind = match status.code() {
        Code::InvalidArgument
        | Code::NotFound
        | Code::FailedPrecondition
        | Code::Unauthenticated
        | Code::PermissionDenied
        | Code::Unimplemented
        | Code::AlreadyExists => ErrorKind::Rejected,
        Code::OutOfRange => ErrorKind::BadResponse,
        Code::Internal if status.message().contains("decode") => ErrorKind::BadResponse,
        Code::DeadlineExceeded => ErrorKind::Timeout,
        _ => ErrorKind::Unavailable,
    };
    Error::new(
        kind,
        format!("gRPC {:?}: {}", status.code(), super::with_causes(&status)),
    )
}

impl GrpcClient {
    pub(super) fn new(
        endpoint: &Endpoint,
        connect_timeout: Duration,
        auth_token: Option<&str>,
        max_response_bytes: usize,
        extra_roots_pem: Option<&[u8]>,
    ) -> Result<GrpcClient, String> {
        let mut builder = tonic::transport::Endpoint::from_shared(endpoint.base.clone())
            .map_err(|err| format!("`{}`: {err}", endpoint.url))?
            .connect_timeout(connect_timeout)
            .tcp_nodelay(true);
        if endpoint.tls {
            let mut tls = ClientTlsConfig::new().with_webpki_roots();
            if let Some(pem) = extra_roots_pem {
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            builder = builder
                .tls_config(tls)
                .map_err(|err| format!("`{}`: TLS: {err}", endpoint.url))?;
        }
        let auth = auth_token
            .map(|token| {
                let mut value: tonic::metadata::MetadataValue<_> = format!("Bearer {token}")
                    .parse()
                    .map_err(|_| "auth-token holds characters a header cannot carry".to_string())?;
                value.set_sensitive(true);
                Ok::<_, String>(value)
            })
            .transpose()?;
        Ok(GrpcClient {
            channel: builder.connect_lazy(),
            auth,
            max_response_bytes,
        })
    }

    async fn unary<Req, Resp>(&self, method: &'static str, message: Req) -> Result<Resp, Error>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone())
            .max_decoding_message_size(self.max_response_bytes)
            .max_encoding_message_size(usize::MAX);
        grpc.ready().await.map_err(|err| {
            Error::new(
                ErrorKind::Unavailable,
                format!("gRPC connection: {}", super::with_causes(&err)),
            )
        })?;
        let mut request = tonic::Request::new(message);
        if let Some(auth) = &self.auth {
            request.metadata_mut().insert("authorization", auth.clone());
        }
        let path = PathAndQuery::try_from(format!("{SERVICE}{method}"))
            .expect("static method paths are valid");
        grpc.unary(request, path, tonic_prost::ProstCodec::default())
            .await
            .map(tonic::Response::into_inner)
            .map_err(status_error)
    }

    pub(super) async fn ready(&self) -> Result<bool, Error> {
        let response: proto::ServerReadyResponse = self
            .unary("ServerReady", proto::ServerReadyRequest {})
            .await?;
        Ok(response.ready)
    }

    pub(super) async fn model_metadata(
        &self,
        model: &str,
        version: &str,
    ) -> Result<ModelInfo, Error> {
        let response: proto::ModelMetadataResponse = self
            .unary(
                "ModelMetadata",
                proto::ModelMetadataRequest {
                    name: model.to_string(),
                    version: version.to_string(),
                },
            )
            .await?;
        let info = |t: proto::TensorMetadata| TensorInfo {
            name: t.name,
            datatype: t.datatype,
            shape: t.shape,
        };
        Ok(ModelInfo {
            inputs: response.inputs.into_iter().map(info).collect(),
            outputs: response.outputs.into_iter().map(info).collect(),
        })
    }

    pub(super) async fn infer(
        &self,
        model: &str,
        version: &str,
        request: &Request,
    ) -> Result<Response, Error> {
        let message = proto::ModelInferRequest {
            model_name: model.to_string(),
            model_version: version.to_string(),
            id: request.id.clone(),
            inputs: request
                .inputs
                .iter()
                .map(|t| proto::InferInputTensor {
                    name: t.name.clone(),
                    datatype: t.datatype.clone(),
                    shape: t.shape.clone(),
                })
                .collect(),
            raw_input_contents: request.inputs.iter().map(Tensor::raw_shared).collect(),
        };
        let response: proto::ModelInferResponse = self.unary("ModelInfer", message).await?;
        decode_response(response)
    }
}

pub(super) fn decode_response(response: proto::ModelInferResponse) -> Result<Response, Error> {
    let raw = response.raw_output_contents;
    if !raw.is_empty() && raw.len() != response.outputs.len() {
        return Err(Error::new(
            ErrorKind::BadResponse,
            format!(
                "{} raw output contents for {} outputs",
                raw.len(),
                response.outputs.len()
            ),
        ));
    }
    let outputs = response
        .outputs
        .into_iter()
        .enumerate()
        .map(|(i, out)| match raw.get(i) {
            Some(bytes) => Tensor::from_raw(out.name, out.datatype, out.shape, bytes),
            None => {
                let c = out.contents.unwrap_or_default();
                let data = match out.datatype.as_str() {
                    "BOOL" => Data::Bool(c.bool_contents),
                    "INT8" | "INT16" | "INT32" => {
                        Data::Int(c.int_contents.into_iter().map(i64::from).collect())
                    }
                    "INT64" => Data::Int(c.int64_contents),
                    "UINT8" | "UINT16" | "UINT32" => {
                        Data::UInt(c.uint_contents.into_iter().map(u64::from).collect())
                    }
                    "UINT64" => Data::UInt(c.uint64_contents),
                    "FP32" => Data::Float(c.fp32_contents.into_iter().map(f64::from).collect()),
                    "FP64" => Data::Float(c.fp64_contents),
                    "BYTES" => Data::Bytes(c.bytes_contents),
                    other => {
                        return Err(Error::new(
                            ErrorKind::BadResponse,
                            format!(
                                "output `{}`: datatype `{other}` without raw contents",
                                out.name
                            ),
                        ));
                    }
                };
                Tensor {
                    name: out.name,
                    datatype: out.datatype,
                    shape: out.shape,
                    data,
                }
                .checked()
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Response {
        id: response.id,
        outputs,
    })
}
