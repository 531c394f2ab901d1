//! The chat's connection token. The session's actor is the only one that asks Connect for a
//! new one (CreateParticipantConnection): a call that finds its token refused asks the actor
//! through a bounded queue and waits for the answer, so any number of calls meeting an
//! expired token cost one CreateParticipantConnection, not one each.

use super::{Session, SessionError};
use crate::security::secret::Secret;
use std::time::Duration;
use tokio::sync::oneshot;

/// A call's request for a token to replace the one Connect refused.
pub(super) struct RefreshRequest {
    /// The token the call used; when the current token differs, it is the answer.
    pub stale: Secret,
    pub reply: oneshot::Sender<Result<Secret, SessionError>>,
}

impl Session {
    /// The current connection token, waiting up to `wait` for the first one.
    pub async fn connection_token(&self, wait: Duration) -> Result<Secret, SessionError> {
        self.touch();
        if let Some(link) = &self.link {
            if self.token.with(Option::is_none)
                && !link.owner.load(std::sync::atomic::Ordering::Relaxed)
            {
                // No shared token yet (or its key was lost): ask the owner to share it.
                if let Err(e) = link
                    .cluster
                    .request_refresh(self.key(), &Secret::new(""))
                    .await
                {
                    tracing::debug!(error = %e, "could not ask the owner for its token");
                }
            }
        }
        let res = tokio::time::timeout(wait, self.token.wait_for(|t| t.is_some())).await;
        match res {
            Ok(t) => t.ok_or(SessionError::NotReady),
            _ if self.is_ended() => Err(SessionError::Ended),
            _ => Err(SessionError::NotReady),
        }
    }

    /// A token to replace `stale`, which Connect refused: the current one if the actor has
    /// replaced it already, else the one the actor's next CreateParticipantConnection
    /// brings (shared by every call waiting for it). [`SessionError::Ended`] when Connect
    /// refuses a new one: the chat has ended.
    pub async fn refresh_token(&self, stale: &Secret) -> Result<Secret, SessionError> {
        if let Some(current) = self.current_token() {
            if current.expose() != stale.expose() {
                return Ok(current);
            }
        }
        if let Some(link) = &self.link {
            if !link.owner.load(std::sync::atomic::Ordering::Relaxed) {
                return self.refresh_from_owner(stale).await;
            }
        }
        let (reply, answer) = oneshot::channel();
        let request = RefreshRequest {
            stale: stale.clone(),
            reply,
        };
        if self.refresh.send(request).await.is_err() {
            return Err(self.stopped());
        }
        answer.await.unwrap_or_else(|_| Err(self.stopped()))
    }

    /// Cluster mode, on a replica that does not own the chat: asks the owner for a new token
    /// and waits for it to be shared.
    async fn refresh_from_owner(&self, stale: &Secret) -> Result<Secret, SessionError> {
        let Some(link) = &self.link else {
            return Err(SessionError::NotReady);
        };
        if let Err(e) = link.cluster.request_refresh(self.key(), stale).await {
            tracing::debug!(error = %e, "could not ask the owner for a new token");
            return Err(SessionError::NotReady);
        }
        let fresh = self
            .token
            .wait_for(|t| t.as_ref().is_some_and(|t| t.expose() != stale.expose()));
        match tokio::time::timeout(self.settings.connect_timeout, fresh).await {
            Ok(Some(t)) => Ok(t),
            _ if self.is_ended() => Err(SessionError::Ended),
            _ => Err(SessionError::NotReady),
        }
    }

    pub(super) fn current_token(&self) -> Option<Secret> {
        self.token.get()
    }

    /// Why a session whose actor has stopped cannot answer.
    fn stopped(&self) -> SessionError {
        if self.is_ended() {
            SessionError::Ended
        } else {
            SessionError::ShuttingDown
        }
    }
}
