//! Routes for a tonic server that serves typed services and proxied ones side by side.

use std::collections::{BTreeSet, HashMap};
use std::convert::Infallible;

use tonic::server::NamedService;
use tower_service::Service;

use crate::mq::MessageQueue;
use crate::{StreamDirector, TransparentProxy};

/// A route could not be added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouteError {
    /// The service (or method) is already routed.
    #[error("{path} is already routed to {existing}")]
    Conflict {
        /// The route that was asked for, `/pkg.Service/*` or `/pkg.Service/Method`.
        path: String,
        /// What serves it already.
        existing: &'static str,
    },
    /// The name cannot be a gRPC service or method name.
    #[error("invalid gRPC {what} name {name:?}: use letters, digits, '_' and '.'")]
    InvalidName {
        /// `service` or `method`.
        what: &'static str,
        /// The name as given.
        name: String,
    },
}

#[derive(Debug, Clone)]
enum Registered {
    Typed,
    Proxied,
    ProxiedMethods(BTreeSet<String>),
}

/// The routes of a tonic server: typed services, proxied services or methods, and an
/// optional transparent catch-all — with route conflicts reported as errors.
///
/// ```no_run
/// use grpcproxy::{mq::NoQueue, ProxyRoutes, SingleUpstream, TransparentProxy, Upstream};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let proxy = TransparentProxy::new(NoQueue, SingleUpstream::new(Upstream::new("http://127.0.0.1:50052")?));
/// let routes = ProxyRoutes::new()
///     // .add_service(GreeterServer::new(MyGreeter))?   // a typed tonic service
///     .register_service(proxy.clone(), "pkg.Inventory", &[])?    // every method proxied
///     .register_service(proxy, "pkg.Billing", &["Charge"])?;     // only this method
/// tonic::transport::Server::builder()
///     .add_routes(routes.into_routes())
///     .serve("127.0.0.1:50051".parse()?)
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct ProxyRoutes {
    router: axum::Router,
    services: HashMap<String, Registered>,
}

impl Default for ProxyRoutes {
    fn default() -> Self {
        Self::new()
    }
}

impl ProxyRoutes {
    /// No routes yet; unknown calls answer `UNIMPLEMENTED` (tonic's default).
    pub fn new() -> Self {
        Self {
            router: tonic::service::Routes::default().into_axum_router(),
            services: HashMap::new(),
        }
    }

    /// Adds a typed tonic service (generated `...Server`), served in-process.
    pub fn add_service<S>(mut self, service: S) -> Result<Self, RouteError>
    where
        S: Service<http::Request<tonic::body::Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        self.claim(S::NAME, Registered::Typed)?;
        self.router = tonic::service::Routes::from(self.router)
            .add_service(service)
            .into_axum_router();
        Ok(self)
    }

    /// Proxies the service `service_name` (`pkg.Service`) through `proxy`: every method if
    /// `methods` is empty, else only those methods (the others answer `UNIMPLEMENTED`).
    pub fn register_service<D: StreamDirector, Q: MessageQueue>(
        mut self,
        proxy: TransparentProxy<D, Q>,
        service_name: &str,
        methods: &[&str],
    ) -> Result<Self, RouteError> {
        check_name("service", service_name)?;
        for method in methods {
            check_name("method", method)?;
        }
        if methods.is_empty() {
            self.claim(service_name, Registered::Proxied)?;
            self.router = self
                .router
                .route_service(&format!("/{service_name}/{{*method}}"), proxy);
            return Ok(self);
        }
        let mut added = BTreeSet::new();
        for method in methods {
            let path = format!("/{service_name}/{method}");
            let taken = match self.services.get(service_name) {
                Some(Registered::ProxiedMethods(existing)) => existing.contains(*method),
                Some(_) => true,
                None => false,
            } || added.contains(*method);
            if taken {
                return Err(RouteError::Conflict {
                    path,
                    existing: self.describe(service_name),
                });
            }
            added.insert(method.to_string());
        }
        for method in &added {
            self.router = self
                .router
                .route_service(&format!("/{service_name}/{method}"), proxy.clone());
        }
        match self
            .services
            .entry(service_name.to_owned())
            .or_insert_with(|| Registered::ProxiedMethods(BTreeSet::new()))
        {
            Registered::ProxiedMethods(existing) => existing.extend(added),
            _ => unreachable!("checked above: only method sets reach here"),
        }
        Ok(self)
    }

    /// Proxies every call no other route takes: the transparent catch-all.
    pub fn fallback<D: StreamDirector, Q: MessageQueue>(
        mut self,
        proxy: TransparentProxy<D, Q>,
    ) -> Self {
        self.router = self.router.fallback_service(proxy);
        self
    }

    /// The routes, for `tonic::transport::Server::builder().add_routes(..)`.
    pub fn into_routes(self) -> tonic::service::Routes {
        tonic::service::Routes::from(self.router)
    }

    /// The routes as an axum router, to add more layers or routes.
    pub fn into_axum_router(self) -> axum::Router {
        self.router
    }

    fn claim(&mut self, service: &str, kind: Registered) -> Result<(), RouteError> {
        if self.services.contains_key(service) {
            return Err(RouteError::Conflict {
                path: format!("/{service}/*"),
                existing: self.describe(service),
            });
        }
        self.services.insert(service.to_owned(), kind);
        Ok(())
    }

    fn describe(&self, service: &str) -> &'static str {
        match self.services.get(service) {
            Some(Registered::Typed) => "a typed service",
            Some(Registered::Proxied) => "the proxy",
            Some(Registered::ProxiedMethods(_)) => "proxied methods",
            None => "nothing",
        }
    }
}

fn check_name(what: &'static str, name: &str) -> Result<(), RouteError> {
    let valid = !name.is_empty()
        && !name.starts_with('.')
        && !name.ends_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        && (what == "service" || !name.contains('.'));
    if valid {
        Ok(())
    } else {
        Err(RouteError::InvalidName {
            what,
            name: name.to_owned(),
        })
    }
}
