//! Views (DescribeView) and customer authentication in chat (GetAuthenticationUrl,
//! CancelParticipantAuthentication).

use super::client::{Connect, Timed};
use super::error::UpstreamError;
use crate::security::secret::Secret;
use aws_sdk_connectparticipant::types::View;

impl Connect {
    pub async fn describe_view(
        &self,
        token: &Secret,
        view_token: &str,
    ) -> Result<View, UpstreamError> {
        let out = self
            .participant()
            .describe_view()
            .connection_token(token.expose())
            .view_token(view_token)
            .send()
            .timed(self.metrics(), "DescribeView")
            .await?;
        out.view.ok_or(UpstreamError::Incomplete("View"))
    }

    pub async fn get_authentication_url(
        &self,
        token: &Secret,
        session_id: &str,
        redirect_uri: &str,
    ) -> Result<String, UpstreamError> {
        let out = self
            .participant()
            .get_authentication_url()
            .connection_token(token.expose())
            .session_id(session_id)
            .redirect_uri(redirect_uri)
            .send()
            .timed(self.metrics(), "GetAuthenticationUrl")
            .await?;
        out.authentication_url
            .ok_or(UpstreamError::Incomplete("AuthenticationUrl"))
    }

    pub async fn cancel_authentication(
        &self,
        token: &Secret,
        session_id: &str,
    ) -> Result<(), UpstreamError> {
        self.participant()
            .cancel_participant_authentication()
            .connection_token(token.expose())
            .session_id(session_id)
            .send()
            .timed(self.metrics(), "CancelParticipantAuthentication")
            .await?;
        Ok(())
    }
}
