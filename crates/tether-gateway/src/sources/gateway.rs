//! The gateway's own metrics as a source: its recorder's families, served
//! on `/metrics` and alone on `/metrics/proxy`. The only source allowed to
//! write `tether_*` names.

use futures::future::BoxFuture;
use std::sync::Arc;

use crate::sources::{Part, Scope, ScrapeRequest, Source, SourceStatus, StatusItem};
use crate::state::SelfFamilies;
use crate::view::{Drops, Families, Origin};

/// The gateway's own metrics.
pub(crate) struct GatewaySource {
    families: SelfFamilies,
}

impl std::fmt::Debug for GatewaySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GatewaySource")
    }
}

impl GatewaySource {
    /// A source reading the recorder's families through `families`.
    pub(crate) fn new(families: SelfFamilies) -> GatewaySource {
        GatewaySource { families }
    }
}

impl Source for GatewaySource {
    fn kind(&self) -> &'static str {
        "gateway"
    }

    fn collect(&self, request: ScrapeRequest) -> BoxFuture<'_, Vec<Part>> {
        let parts = match request.scope {
            Scope::Connected => Vec::new(),
            Scope::All | Scope::Gateway => {
                let mut drops = Drops::default();
                let families =
                    Families::normalize((self.families)(), None, Origin::Gateway, &mut drops);
                vec![Part {
                    families: Arc::new(families),
                    target: None,
                }]
            }
        };
        Box::pin(async move { parts })
    }

    fn status(&self) -> SourceStatus {
        SourceStatus {
            kind: self.kind(),
            items: vec![StatusItem {
                id: "self".to_owned(),
                state: "serving",
                details: vec![("version", env!("CARGO_PKG_VERSION").to_owned())],
            }],
        }
    }
}
