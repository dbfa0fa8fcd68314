//! The relay's HTTP routes, as the engine's requests.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request as HttpRequest, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use mend_protocol::{AUTH_SCHEME, Ack, ErrorCode, Limits, Page, Snapshot, SpaceId, paths};

use crate::{
    error::{Error, Result},
    sync::{Failure, Request, Response, SpaceLink},
};

/// How long one HTTP request may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// An HTTP connection pool to one relay.
#[derive(Clone, Debug)]
pub struct RelayHttp {
    base: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl RelayHttp {
    /// A client for the relay at `url` (`http://host:port`).
    pub fn new(url: &str) -> Result<Self> {
        let base = url.trim().trim_end_matches('/').to_owned();
        if base.starts_with("https://") {
            return Err(Error::Invalid(
                "https relays need a TLS-terminating proxy in this version; use the proxy's http address on the device's network".into(),
            ));
        }
        if !base.starts_with("http://") || base.len() <= "http://".len() {
            return Err(Error::Invalid(format!(
                "a relay URL looks like http://host:port, not {:?}",
                crate::ids::truncate(url)
            )));
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Self { base, client })
    }

    /// The relay's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The WebSocket URL for a path.
    pub(crate) fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", &self.base["http://".len()..])
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Vec<u8>>,
    ) -> std::result::Result<(StatusCode, Option<u64>, Bytes), Failure> {
        let uri = format!("{}{path}", self.base);
        let mut builder = HttpRequest::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("{AUTH_SCHEME} {token}"));
        if body.is_some() {
            builder = builder.header(header::CONTENT_TYPE, paths::FRAME_CONTENT_TYPE);
        }
        let request = builder
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|_| Failure::Unreachable)?;
        let fut = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|_| Failure::Unreachable)?;
            let status = response.status();
            let retry = response
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .map(|s| s * 1000);
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|_| Failure::Unreachable)?;
            Ok((status, retry, body.to_bytes()))
        };
        tokio::time::timeout(TIMEOUT, fut)
            .await
            .map_err(|_| Failure::Unreachable)?
    }

    /// Erases a space at the relay (a partner leaving, a separation). Idempotent: a space that
    /// is already gone counts as erased.
    pub async fn erase(&self, link: &SpaceLink) -> Result<()> {
        let id = SpaceId(link.keys.space_id);
        let (status, retry, body) = self
            .call(
                Method::DELETE,
                &paths::space(&id),
                link.keys.token.expose(),
                None,
            )
            .await
            .map_err(|_| Error::Unreachable)?;
        match ok(status, retry, &body) {
            Ok(()) | Err(Failure::SpaceGone) => Ok(()),
            Err(Failure::Unauthorized) => {
                Err(Error::Invalid("the relay refused this device's key".into()))
            }
            Err(_) => Err(Error::Unreachable),
        }
    }

    /// Carries one request; every outcome becomes a [`Response`].
    pub async fn execute(
        &self,
        link: &SpaceLink,
        device: &[u8; 16],
        request: &Request,
    ) -> Response {
        let space = link.space;
        match self.try_execute(link, device, request).await {
            Ok(r) => r,
            Err(failure) => Response::Failed { space, failure },
        }
    }

    async fn try_execute(
        &self,
        link: &SpaceLink,
        device: &[u8; 16],
        request: &Request,
    ) -> std::result::Result<Response, Failure> {
        let space = link.space;
        let id = SpaceId(link.keys.space_id);
        let token = link.keys.token.expose();
        let limits = Limits::DEFAULT;
        let malformed = |_| Failure::Unreachable;
        match request {
            Request::Create { .. } => {
                let (status, retry, body) = self
                    .call(Method::PUT, &paths::space(&id), token, None)
                    .await?;
                ok(status, retry, &body)?;
                Ok(Response::Created { space })
            }
            Request::Push { push, .. } => {
                let (status, retry, body) = self
                    .call(
                        Method::POST,
                        &paths::chunks(&id),
                        token,
                        Some(push.to_bytes()),
                    )
                    .await?;
                ok(status, retry, &body)?;
                let ack = Ack::decode(&body, &limits).map_err(malformed)?;
                Ok(Response::Acked { space, ack })
            }
            Request::Pull { after, .. } | Request::Subscribe { after, .. } => {
                let device = mend_protocol::DeviceId(*device);
                let path = paths::pull(
                    &id,
                    *after,
                    Some(mend_protocol::MAX_PAGE_LIMIT),
                    Some(&device),
                );
                let (status, retry, body) = self.call(Method::GET, &path, token, None).await?;
                ok(status, retry, &body)?;
                let page = Page::decode(&body, &limits).map_err(malformed)?;
                Ok(Response::Page { space, page })
            }
            Request::GetSnapshot { .. } => {
                let (status, retry, body) = self
                    .call(Method::GET, &paths::snapshot(&id), token, None)
                    .await?;
                if status == StatusCode::NOT_FOUND
                    && error_code(&body) == Some(ErrorCode::NoSnapshot)
                {
                    return Ok(Response::Snapshot {
                        space,
                        snapshot: None,
                    });
                }
                ok(status, retry, &body)?;
                let snapshot = Snapshot::decode(&body, &limits).map_err(malformed)?;
                Ok(Response::Snapshot {
                    space,
                    snapshot: Some(snapshot),
                })
            }
            Request::PutSnapshot { snapshot, .. } => {
                let (status, retry, body) = self
                    .call(
                        Method::PUT,
                        &paths::snapshot(&id),
                        token,
                        Some(snapshot.to_bytes()),
                    )
                    .await?;
                ok(status, retry, &body)?;
                Ok(Response::SnapshotStored {
                    space,
                    covers: snapshot.covers,
                })
            }
        }
    }
}

/// The code in an error body `{"error": "<name>", …}`.
fn error_code(body: &[u8]) -> Option<ErrorCode> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    ErrorCode::from_name(value.get("error")?.as_str()?)
}

/// Success, or the failure the status and error body describe.
fn ok(
    status: StatusCode,
    retry_after_ms: Option<u64>,
    body: &[u8],
) -> std::result::Result<(), Failure> {
    if status.is_success() {
        return Ok(());
    }
    let code = error_code(body);
    Err(match (status.as_u16(), code) {
        (_, Some(ErrorCode::Pruned)) | (410, _) => Failure::Pruned,
        (_, Some(ErrorCode::Unauthorized | ErrorCode::SpaceExists)) | (401 | 403, _) => {
            Failure::Unauthorized
        }
        (_, Some(ErrorCode::SpaceNotFound)) => Failure::SpaceGone,
        (500..=599, _) | (_, Some(ErrorCode::Unavailable | ErrorCode::Internal)) => {
            Failure::Unreachable
        }
        (_, Some(code)) => Failure::Refused {
            code,
            retry_after_ms: retry_after_ms.unwrap_or(0),
        },
        (s, None) => Failure::Refused {
            code: ErrorCode::Unknown(u8::try_from(s % 256).unwrap_or(0)),
            retry_after_ms: 0,
        },
    })
}
