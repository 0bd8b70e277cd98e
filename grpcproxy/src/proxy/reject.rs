//! Requests that are not gRPC get a defined HTTP answer and are never forwarded.

use http::{header, HeaderValue, Method, Request, Response, StatusCode, Version};

use super::ResponseBody;
use crate::headers::is_grpc_content_type;

/// The HTTP error for a request that is not a gRPC call, or `None` for a gRPC call.
pub(crate) fn non_grpc_request<B>(request: &Request<B>) -> Option<Response<ResponseBody>> {
    if request.version() != Version::HTTP_2 {
        return Some(error(
            StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            "grpcproxy: gRPC needs HTTP/2\n",
        ));
    }
    if request.method() != Method::POST {
        let mut response = error(
            StatusCode::METHOD_NOT_ALLOWED,
            "grpcproxy: gRPC calls are POST requests\n",
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return Some(response);
    }
    match request.headers().get(header::CONTENT_TYPE) {
        Some(value) if is_grpc_content_type(value) => None,
        _ => Some(error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "grpcproxy: content-type must be application/grpc\n",
        )),
    }
}

fn error(status: StatusCode, text: &'static str) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::text(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
