//! A real server on a loopback port, and a small HTTP/1.1 client for it.
#![allow(dead_code)]

use std::net::SocketAddr;

use axum::Router;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};

/// Serves `app` on `127.0.0.1:0` until the test's runtime ends.
pub(crate) async fn serve(app: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Value,
}

impl Reply {
    pub(crate) fn x_cache(&self) -> &str {
        self.headers
            .get("x-cache")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
    }

    pub(crate) fn code(&self) -> &str {
        self.body["errors"][0]["extensions"]["code"]
            .as_str()
            .unwrap_or("-")
    }
}

/// One request over a fresh TCP connection, with exactly the given headers (and `Host`):
/// the status, headers and raw body of the answer.
pub(crate) async fn exchange(
    addr: SocketAddr,
    method: Method,
    path_and_query: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> (StatusCode, HeaderMap, Bytes) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut builder = Request::builder()
        .method(method)
        .uri(path_and_query)
        .header("host", addr.to_string());
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let response = sender
        .send_request(builder.body(Full::new(body)).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, bytes)
}

/// One request over a fresh TCP connection, with a bearer token and a JSON body if given.
pub(crate) async fn request(
    addr: SocketAddr,
    method: Method,
    path_and_query: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Reply {
    let authorization = token.map(|token| format!("Bearer {token}"));
    let mut headers = Vec::new();
    if let Some(authorization) = &authorization {
        headers.push(("authorization", authorization.as_str()));
    }
    let payload = match body {
        Some(json) => {
            headers.push(("content-type", "application/json"));
            Bytes::from(json.to_string())
        }
        None => Bytes::new(),
    };
    let (status, headers, bytes) = exchange(addr, method, path_and_query, &headers, payload).await;
    let body = serde_json::from_slice(&bytes)
        .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()));
    Reply {
        status,
        headers,
        body,
    }
}

pub(crate) async fn post(addr: SocketAddr, path: &str, token: Option<&str>, body: Value) -> Reply {
    request(addr, Method::POST, path, token, Some(&body)).await
}

pub(crate) async fn get(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
    params: &[(&str, &str)],
) -> Reply {
    let qs = serde_urlencoded::to_string(params).unwrap();
    request(addr, Method::GET, &format!("{path}?{qs}"), token, None).await
}

pub(crate) mod provider;
pub(crate) mod pyjwt;
