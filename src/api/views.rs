//! GetView, GetAuthenticationUrl and CancelAuthentication: one Connect call each, with the
//! chat's connection token.

use super::status::ApiError;
use super::validate::check_len;
use super::{deadline, Access, Gateway};
use crate::pb;
use crate::security::auth::Principal;
use tonic::{Request, Response, Status};

/// Connect's session ids are UUIDs: 36 characters.
const SESSION_ID_LEN: usize = 36;

fn check_session_id(session_id: &str) -> Result<(), ApiError> {
    check_len("session_id", session_id, SESSION_ID_LEN, SESSION_ID_LEN)
}

impl Gateway {
    pub(super) async fn get_view_inner(
        &self,
        request: Request<pb::GetViewRequest>,
    ) -> Result<Response<pb::GetViewResponse>, Status> {
        let deadline = deadline(&request);
        let principal = Principal::of(&request);
        let req = request.into_inner();
        check_len("view_token", &req.view_token, 1, 1000)?;
        let session = self
            .live_session(req.chat.as_ref(), &principal, Access::Act)
            .await?;
        let upstream = self.sessions.upstream();
        let view = self
            .with_token(&session, deadline, |t| {
                let token = &req.view_token;
                async move { upstream.describe_view(&t, token).await }
            })
            .await
            .map_err(|e| match e {
                ApiError::Upstream(crate::connect::UpstreamError::NotFound) => {
                    ApiError::not_found("view_token")
                }
                other => other,
            })?;
        let content = view.content.map(|c| pb::ViewContent {
            input_schema: c.input_schema.unwrap_or_default(),
            template: c.template.unwrap_or_default(),
            actions: c.actions.unwrap_or_default(),
        });
        Ok(Response::new(pb::GetViewResponse {
            view: Some(pb::View {
                id: view.id.unwrap_or_default(),
                arn: view.arn.unwrap_or_default(),
                name: view.name.unwrap_or_default(),
                version: view
                    .version
                    .and_then(|v| u32::try_from(v).ok())
                    .unwrap_or(0),
                content,
            }),
        }))
    }

    pub(super) async fn get_authentication_url_inner(
        &self,
        request: Request<pb::GetAuthenticationUrlRequest>,
    ) -> Result<Response<pb::GetAuthenticationUrlResponse>, Status> {
        let deadline = deadline(&request);
        let principal = Principal::of(&request);
        let req = request.into_inner();
        check_session_id(&req.session_id)?;
        check_len("redirect_uri", &req.redirect_uri, 1, 1024)?;
        if url::Url::parse(&req.redirect_uri).is_err() {
            return Err(ApiError::invalid("redirect_uri", "is not an absolute URL").into());
        }
        let session = self
            .live_session(req.chat.as_ref(), &principal, Access::Act)
            .await?;
        let upstream = self.sessions.upstream();
        let url = self
            .with_token(&session, deadline, |t| {
                let (id, uri) = (&req.session_id, &req.redirect_uri);
                async move { upstream.get_authentication_url(&t, id, uri).await }
            })
            .await?;
        Ok(Response::new(pb::GetAuthenticationUrlResponse {
            authentication_url: url,
        }))
    }

    pub(super) async fn cancel_authentication_inner(
        &self,
        request: Request<pb::CancelAuthenticationRequest>,
    ) -> Result<Response<pb::CancelAuthenticationResponse>, Status> {
        let deadline = deadline(&request);
        let principal = Principal::of(&request);
        let req = request.into_inner();
        check_session_id(&req.session_id)?;
        let session = self
            .live_session(req.chat.as_ref(), &principal, Access::Act)
            .await?;
        let upstream = self.sessions.upstream();
        self.with_token(&session, deadline, |t| {
            let id = &req.session_id;
            async move { upstream.cancel_authentication(&t, id).await }
        })
        .await?;
        Ok(Response::new(pb::CancelAuthenticationResponse {}))
    }
}
