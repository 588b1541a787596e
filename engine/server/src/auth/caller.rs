//! Who is calling, and whether they may make this call: [`Caller::authorize`] runs in the handler
//! once the body names the program and store. The program must be the credential's (whatever IDs
//! the body carries), the scopes must allow the call, and a partner's stores and operations must
//! include it. (The gate that finds the caller from the call's key is `grpc::gate`.)

use std::sync::Arc;

use crate::auth::credential::{Credential, Scope};
use crate::error::{EngineError, EngineResult};

/// The authenticated caller of one call.
#[derive(Clone, Debug)]
pub struct Caller {
    pub program_id: String,
    pub credential: Arc<Credential>,
}

/// Rate defaults for credentials that set none.
#[derive(Clone, Copy, Debug)]
pub struct RateDefaults {
    pub per_second: u32,
    pub burst: u32,
}

/// What a call needs from its caller.
#[derive(Clone, Copy, Debug)]
pub struct Needs<'a> {
    pub rpc: &'static str,
    pub program_id: &'a str,
    /// The store the call acts for ("" when it names none).
    pub store_id: &'a str,
    /// Any one of these scopes allows the call.
    pub scopes: &'a [Scope],
}

impl Caller {
    /// Checks that this caller may make this call (see the module documentation).
    pub fn authorize(&self, needs: Needs<'_>) -> EngineResult<()> {
        let credential = &self.credential;
        let denied = |why: &'static str| Err(EngineError::PermissionDenied { credential_id: credential.id.clone(), why });
        // Constant answer for any other program, existing or not: a key cannot probe other tenants.
        if needs.program_id != self.program_id {
            return denied("the credential belongs to another program");
        }
        if !needs.scopes.iter().any(|scope| credential.has(*scope)) {
            return denied("the credential's scopes do not allow this call");
        }
        if !credential.operations.is_empty() && !credential.operations.iter().any(|operation| operation == needs.rpc) {
            return denied("the credential may not make this call");
        }
        if !credential.stores.is_empty() && !needs.store_id.is_empty() && !credential.stores.iter().any(|store| store == needs.store_id) {
            return denied("the credential may not act for this store");
        }
        Ok(())
    }
}
