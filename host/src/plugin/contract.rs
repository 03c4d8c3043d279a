//! The versions of the contract a component may be built against, behind one interface: a
//! component is matched to the newest version whose world it implements, and every call takes
//! and gives the current contract's types whatever the component's version.

use crate::bindings::{Envelope, HandlerError, PluginInfo, PluginWorld, PluginWorldPre, v0_1};
use crate::sandbox::GuestState;
use wasmtime::Store;
use wasmtime::component::InstancePre;

/// The contract versions the host loads, newest first.
pub const VERSIONS: [&str; 2] = ["0.2.0", "0.1.0"];

/// A component linked and type-checked against one version of the contract.
pub enum Pre {
    Current(PluginWorldPre<GuestState>),
    V0_1(v0_1::PluginWorldPre<GuestState>),
}

/// An instance of a component, of the version its [`Pre`] matched.
pub enum World {
    Current(PluginWorld),
    V0_1(v0_1::PluginWorld),
}

impl Pre {
    /// Matches `instance_pre` to the newest version whose world it implements.
    ///
    /// # Errors
    /// What the current version found wrong, when no version matches.
    pub fn new(instance_pre: InstancePre<GuestState>) -> wasmtime::Result<Self> {
        match PluginWorldPre::new(instance_pre.clone()) {
            Ok(pre) => Ok(Self::Current(pre)),
            Err(current) => v0_1::PluginWorldPre::new(instance_pre)
                .map(Self::V0_1)
                .map_err(|_| current),
        }
    }

    /// The version of the contract the component was built against.
    pub fn version(&self) -> &'static str {
        match self {
            Self::Current(_) => VERSIONS[0],
            Self::V0_1(_) => VERSIONS[1],
        }
    }

    pub async fn instantiate(&self, store: &mut Store<GuestState>) -> wasmtime::Result<World> {
        Ok(match self {
            Self::Current(pre) => World::Current(pre.instantiate_async(store).await?),
            Self::V0_1(pre) => World::V0_1(pre.instantiate_async(store).await?),
        })
    }
}

impl World {
    pub async fn describe(&self, store: &mut Store<GuestState>) -> wasmtime::Result<PluginInfo> {
        Ok(match self {
            Self::Current(world) => world.call_describe(store).await?,
            Self::V0_1(world) => world.call_describe(store).await?.into(),
        })
    }

    pub async fn handle_command(
        &self,
        store: &mut Store<GuestState>,
        command: &Envelope,
    ) -> wasmtime::Result<Result<Vec<u8>, HandlerError>> {
        Ok(match self {
            Self::Current(world) => world.call_handle_command(store, command).await?,
            Self::V0_1(world) => world
                .call_handle_command(store, &command.into())
                .await?
                .map_err(Into::into),
        })
    }

    pub async fn handle_event(
        &self,
        store: &mut Store<GuestState>,
        event: &Envelope,
    ) -> wasmtime::Result<Result<(), HandlerError>> {
        Ok(match self {
            Self::Current(world) => world.call_handle_event(store, event).await?,
            Self::V0_1(world) => world
                .call_handle_event(store, &event.into())
                .await?
                .map_err(Into::into),
        })
    }

    pub async fn handle_query(
        &self,
        store: &mut Store<GuestState>,
        query: &Envelope,
    ) -> wasmtime::Result<Result<Vec<u8>, HandlerError>> {
        Ok(match self {
            Self::Current(world) => world.call_handle_query(store, query).await?,
            Self::V0_1(world) => world
                .call_handle_query(store, &query.into())
                .await?
                .map_err(Into::into),
        })
    }
}
