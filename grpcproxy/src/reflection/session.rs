//! One client's reflection stream: its answers, merged from the backends'. Each backend is
//! asked over one stream of its own, opened when first needed and kept for the client's
//! stream, so every answer about one backend comes from the same endpoint (the same build).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use prost::Message;
use tonic::{Code, Status};
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::{
    ErrorResponse, ListServiceResponse, ServerReflectionRequest, ServerReflectionResponse,
    ServiceResponse,
};

use super::backend::BackendStream;
use super::{Ownership, Shared};
use crate::Upstream;

/// The services the proxy answers itself.
const OWN_SERVICES: [&str; 2] = [
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// One backend as this session sees it: fixed when the session starts.
struct Backend {
    name: String,
    upstream: Upstream,
    stream: Option<BackendStream>,
    /// Why it cannot answer, once it failed: not asked again in this session.
    failed: Option<Status>,
}

/// The state of one client's reflection stream.
pub(super) struct Session {
    shared: Arc<Shared>,
    backends: Vec<Backend>,
    /// Which backend answered for a file or symbol: asked first for what relates to it.
    known: HashMap<String, usize>,
}

impl Session {
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        let backends = shared
            .backends
            .backends()
            .into_iter()
            .map(|(name, upstream)| Backend {
                name,
                upstream,
                stream: None,
                failed: None,
            })
            .collect();
        Self {
            shared,
            backends,
            known: HashMap::new(),
        }
    }

    /// The answer to `request`.
    pub(super) async fn answer(
        &mut self,
        request: ServerReflectionRequest,
    ) -> ServerReflectionResponse {
        let message = match &request.message_request {
            None => error(Status::invalid_argument(
                "a reflection request without a question",
            )),
            Some(MessageRequest::ListServices(_)) => self.list_services(&request).await,
            Some(MessageRequest::FileByFilename(name)) => {
                let first = self.known.get(name).copied();
                self.lookup(&request, first, name).await
            }
            Some(MessageRequest::FileContainingSymbol(symbol)) => {
                let first = self.owner_of_symbol(symbol);
                self.lookup(&request, first, symbol).await
            }
            Some(MessageRequest::FileContainingExtension(extension)) => {
                let first = self.known.get(&extension.containing_type).copied();
                self.lookup(&request, first, &extension.containing_type)
                    .await
            }
            Some(MessageRequest::AllExtensionNumbersOfType(name)) => {
                let first = self.known.get(name).copied();
                self.lookup(&request, first, name).await
            }
        };
        let found = !matches!(message, MessageResponse::ErrorResponse(_));
        self.shared.stats.answered_one(found);
        ServerReflectionResponse {
            valid_host: request.host.clone(),
            original_request: Some(request),
            message_response: Some(message),
        }
    }

    /// Which backend serves the service `symbol` names (or the service of the method it
    /// names), as the proxy routes it.
    fn owner_of_symbol(&mut self, symbol: &str) -> Option<usize> {
        if let Some(&known) = self.known.get(symbol) {
            return Some(known);
        }
        let service = symbol.rsplit_once('.').map(|(service, _)| service);
        [Some(symbol), service]
            .into_iter()
            .flatten()
            .find_map(|name| match self.shared.backends.owner(name) {
                Ownership::Backend(owner) => self.backends.iter().position(|b| b.name == owner),
                Ownership::Unrouted | Ownership::FirstLister => None,
            })
    }

    /// Asks backend `index` `request`, opening its stream if needed; a failure is kept and
    /// logged once.
    async fn ask(
        &mut self,
        index: usize,
        request: &ServerReflectionRequest,
    ) -> Result<ServerReflectionResponse, Status> {
        let timeout = self.shared.options.ask_timeout;
        let backend = &mut self.backends[index];
        if let Some(failed) = &backend.failed {
            return Err(failed.clone());
        }
        let answer = match &mut backend.stream {
            Some(stream) => stream.ask(request, timeout).await,
            None => BackendStream::open(&backend.upstream, request, timeout)
                .await
                .map(|(stream, answer)| {
                    backend.stream = Some(stream);
                    answer
                }),
        };
        // Some servers (tonic's) end the whole stream with NOT_FOUND for a symbol they do
        // not have, where the protocol says to answer an error and go on: that is an
        // answer, and the next question opens a new stream to the same endpoint.
        if let Err(status) = &answer {
            if matches!(status.code(), Code::NotFound | Code::InvalidArgument) {
                backend.stream = None;
                return Ok(ServerReflectionResponse {
                    message_response: Some(error(status.clone())),
                    ..ServerReflectionResponse::default()
                });
            }
        }
        if let Err(status) = &answer {
            tracing::warn!(
                backend = %backend.name,
                endpoint = %backend.upstream.address(),
                code = ?status.code(),
                error = %status.message(),
                "merged reflection: skipping a backend that does not answer reflection"
            );
            self.shared.stats.backend_failed();
            backend.stream = None;
            backend.failed = Some(status.clone());
        }
        answer
    }

    /// The services of every backend, as the route table sends them: a service counts for
    /// the backend its calls go to, and only there.
    async fn list_services(&mut self, request: &ServerReflectionRequest) -> MessageResponse {
        let mut names: Vec<String> = OWN_SERVICES.iter().map(|s| (*s).to_owned()).collect();
        let mut listed_by: HashMap<String, usize> = HashMap::new();
        for index in 0..self.backends.len() {
            let Some(services) = self.services_of(index, request).await else {
                continue;
            };
            for service in services {
                if OWN_SERVICES.contains(&service.as_str()) {
                    continue;
                }
                let counts = match self.shared.backends.owner(&service) {
                    Ownership::Backend(owner) => owner == self.backends[index].name,
                    Ownership::Unrouted => false,
                    Ownership::FirstLister => !listed_by.contains_key(&service),
                };
                if counts {
                    listed_by.insert(service.clone(), index);
                    self.known.insert(service.clone(), index);
                    names.push(service);
                }
            }
        }
        names.sort();
        names.dedup();
        MessageResponse::ListServicesResponse(ListServiceResponse {
            service: names
                .into_iter()
                .map(|name| ServiceResponse { name })
                .collect(),
        })
    }

    /// Backend `index`'s services: from the shared cache while fresh, else asked.
    async fn services_of(
        &mut self,
        index: usize,
        request: &ServerReflectionRequest,
    ) -> Option<Vec<String>> {
        let name = self.backends[index].name.clone();
        if let Some(services) = self.shared.cached(&name) {
            return Some(services);
        }
        let answer = self.ask(index, request).await.ok()?;
        match answer.message_response {
            Some(MessageResponse::ListServicesResponse(list)) => {
                let services: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
                self.shared.cache(&name, services.clone(), Instant::now());
                Some(services)
            }
            Some(MessageResponse::ErrorResponse(e)) => {
                tracing::warn!(backend = %name, code = e.error_code, error = %e.error_message, "merged reflection: a backend refused to list its services");
                None
            }
            _ => None,
        }
    }

    /// A file or extension lookup: asked of `first` (the owner, if known), then of every
    /// other backend in turn until one has it.
    async fn lookup(
        &mut self,
        request: &ServerReflectionRequest,
        first: Option<usize>,
        what: &str,
    ) -> MessageResponse {
        let order: Vec<usize> = first
            .into_iter()
            .chain((0..self.backends.len()).filter(|i| Some(*i) != first))
            .collect();
        let mut not_found = Vec::new();
        for index in order {
            let Ok(answer) = self.ask(index, request).await else {
                continue;
            };
            match answer.message_response {
                Some(MessageResponse::ErrorResponse(e)) => {
                    not_found.push(format!(
                        "{}: {}",
                        self.backends[index].name, e.error_message
                    ));
                }
                Some(found) => {
                    self.remember(&found, index);
                    return found;
                }
                None => not_found.push(format!("{}: an empty answer", self.backends[index].name)),
            }
        }
        let asked = if not_found.is_empty() {
            "no backend answered".to_owned()
        } else {
            not_found.join("; ")
        };
        error(Status::not_found(format!("{what} not found ({asked})")))
    }

    /// Remembers which backend gave the files in `found` (and the symbols they define), so
    /// that the client's next questions about them go there first.
    fn remember(&mut self, found: &MessageResponse, index: usize) {
        let MessageResponse::FileDescriptorResponse(files) = found else {
            return;
        };
        for bytes in &files.file_descriptor_proto {
            let Ok(file) = prost_types::FileDescriptorProto::decode(&bytes[..]) else {
                continue;
            };
            let package = file.package().to_owned();
            let qualified = |name: &str| {
                if package.is_empty() {
                    name.to_owned()
                } else {
                    format!("{package}.{name}")
                }
            };
            for message in &file.message_type {
                self.known.entry(qualified(message.name())).or_insert(index);
            }
            for service in &file.service {
                self.known.entry(qualified(service.name())).or_insert(index);
            }
            self.known.entry(file.name().to_owned()).or_insert(index);
        }
    }
}

fn error(status: Status) -> MessageResponse {
    MessageResponse::ErrorResponse(ErrorResponse {
        error_code: status.code() as i32,
        error_message: status.message().to_owned(),
    })
}
