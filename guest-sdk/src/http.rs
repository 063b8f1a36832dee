//! Reading a request and writing a response through `wasi:http`, as plain
//! values: routing code stays free of streams and resources, and can be
//! unit-tested natively.

use crate::wasi::http::types::{
    Fields, IncomingBody, IncomingRequest, Method as WasiMethod, OutgoingBody, OutgoingResponse,
    ResponseOutparam,
};
use crate::wasi::io::streams::StreamError;

/// Most bytes a single write to an output stream may carry.
const WRITE_CHUNK: usize = 4096;

/// An HTTP request, read whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The raw query string (no `?`), empty when there is none.
    pub query: String,
    pub body: Vec<u8>,
}

/// An HTTP response to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            headers: vec![("content-type".to_string(), content_type.to_string())],
            body: body.into(),
        }
    }

    /// A `text/plain` response.
    pub fn text(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Self::new(status, "text/plain; charset=utf-8", body)
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
}

impl Request {
    /// Reads the request line and the whole body. The host has already
    /// bounded the body's size.
    pub fn read(request: &IncomingRequest) -> Result<Self, String> {
        let method = match request.method() {
            WasiMethod::Get => "GET".to_string(),
            WasiMethod::Head => "HEAD".to_string(),
            WasiMethod::Post => "POST".to_string(),
            WasiMethod::Put => "PUT".to_string(),
            WasiMethod::Delete => "DELETE".to_string(),
            WasiMethod::Connect => "CONNECT".to_string(),
            WasiMethod::Options => "OPTIONS".to_string(),
            WasiMethod::Trace => "TRACE".to_string(),
            WasiMethod::Patch => "PATCH".to_string(),
            WasiMethod::Other(other) => other,
        };
        let path_with_query = request.path_with_query().unwrap_or_else(|| "/".to_string());
        let (path, query) = match path_with_query.split_once('?') {
            Some((path, query)) => (path.to_string(), query.to_string()),
            None => (path_with_query, String::new()),
        };
        let body = read_body(request)?;
        Ok(Self {
            method,
            path,
            query,
            body,
        })
    }
}

fn read_body(request: &IncomingRequest) -> Result<Vec<u8>, String> {
    let body = request
        .consume()
        .map_err(|()| "request body already taken".to_string())?;
    let mut bytes = Vec::new();
    {
        let stream = body
            .stream()
            .map_err(|()| "request body stream already taken".to_string())?;
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => bytes.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(e)) => {
                    return Err(format!("cannot read request body: {}", e.to_debug_string()));
                }
            }
        }
    }
    IncomingBody::finish(body);
    Ok(bytes)
}

impl Response {
    /// Sends the response. If the client went away there is nobody to tell,
    /// so failures are dropped.
    pub fn send(self, outparam: ResponseOutparam) {
        let mut headers: Vec<(String, Vec<u8>)> = self
            .headers
            .into_iter()
            .map(|(name, value)| (name, value.into_bytes()))
            .collect();
        headers.push((
            "content-length".to_string(),
            self.body.len().to_string().into_bytes(),
        ));
        let Ok(fields) = Fields::from_list(&headers) else {
            ResponseOutparam::set(outparam, Err(internal_error()));
            return;
        };
        let response = OutgoingResponse::new(fields);
        let _ = response.set_status_code(self.status);
        let Ok(body) = response.body() else {
            ResponseOutparam::set(outparam, Err(internal_error()));
            return;
        };
        ResponseOutparam::set(outparam, Ok(response));
        if let Ok(stream) = body.write() {
            for chunk in self.body.chunks(WRITE_CHUNK) {
                if stream.blocking_write_and_flush(chunk).is_err() {
                    return;
                }
            }
        }
        let _ = OutgoingBody::finish(body, None);
    }
}

fn internal_error() -> crate::wasi::http::types::ErrorCode {
    crate::wasi::http::types::ErrorCode::InternalError(Some("cannot build the response".into()))
}
