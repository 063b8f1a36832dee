//! `wasi:http` hooks. Guests serve HTTP; they may not send requests out: no
//! component has been granted the network.

use wasmtime_wasi_http::{Error, WasiHttpHooks};

pub struct DenyOutgoingHttp;

impl WasiHttpHooks for DenyOutgoingHttp {
    fn send_request(
        &mut self,
        _request: http::Request<wasmtime_wasi_http::WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = wasmtime_wasi_http::Result<(
                    http::Response<wasmtime_wasi_http::WasiBody>,
                    Box<dyn Future<Output = Result<(), Error>> + Send>,
                )>,
            > + Send,
    > {
        Box::new(async { Err(Error::HttpRequestDenied) })
    }
}
