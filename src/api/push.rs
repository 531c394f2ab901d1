//! RegisterPushNotification and UnregisterPushNotification: a chat's device registrations at
//! Connect, through the operator's End User Messaging application (a caller cannot name
//! another).

use super::status::ApiError;
use super::validate::check_len;
use super::{deadline, new_client_token, Access, Gateway};
use crate::connect::push::PushRegistration;
use crate::connect::UpstreamError;
use crate::pb;
use crate::security::auth::Principal;
use crate::session::SessionError;
use crate::store::ChatRecord;
use aws_sdk_connect::types::DeviceType;
use std::sync::Arc;
use tonic::{Request, Response, Status};

impl Gateway {
    /// The chat's record, refusing ended chats, and the chat's instance.
    async fn live_record(
        &self,
        chat: Option<&pb::ChatRef>,
        principal: &Principal,
    ) -> Result<(Arc<ChatRecord>, String), ApiError> {
        let record = self.authorize(chat, principal, Access::Act).await?;
        if record.bot {
            // Connect registers devices for the customer participant only.
            return Err(ApiError::CustomerOnly("push notification"));
        }
        let ended = record.ended
            || self
                .sessions
                .get(&record.key())
                .is_some_and(|s| s.is_ended());
        if ended {
            return Err(SessionError::Ended.into());
        }
        let instance = self.instance_of(&record);
        Ok((record, instance))
    }

    /// The Connect instance of a chat (its record names it when it is not the default).
    pub(super) fn instance_of(&self, record: &ChatRecord) -> String {
        if record.instance_id.is_empty() {
            self.defaults.instance_id.clone()
        } else {
            record.instance_id.clone()
        }
    }

    pub(super) async fn register_push_inner(
        &self,
        request: Request<pb::RegisterPushNotificationRequest>,
    ) -> Result<Response<pb::RegisterPushNotificationResponse>, Status> {
        let deadline = deadline(&request);
        let principal = Principal::of(&request);
        let req = request.into_inner();
        check_len("device_token", &req.device_token, 1, 500)?;
        check_len("client_token", &req.client_token, 0, 500)?;
        let device_type = match pb::DeviceType::try_from(req.device_type) {
            Ok(pb::DeviceType::Apns) => DeviceType::Apns,
            Ok(pb::DeviceType::ApnsSandbox) => DeviceType::ApnsSandbox,
            Ok(pb::DeviceType::Gcm) => DeviceType::Gcm,
            _ => {
                return Err(
                    ApiError::invalid("device_type", "must be APNS, APNS_SANDBOX or GCM").into(),
                )
            }
        };
        let Some(application_arn) = self.defaults.push_application_arn.clone() else {
            return Err(Status::failed_precondition(
                "push notifications are not configured on this gateway (--push-application-arn)",
            ));
        };
        let (record, instance_id) = self.live_record(req.chat.as_ref(), &principal).await?;
        let registration = PushRegistration {
            instance_id,
            contact_id: record.contact_id.clone(),
            application_arn,
            device_token: req.device_token,
            device_type,
            include_raw_message: req.include_raw_message,
            client_token: Some(if req.client_token.is_empty() {
                new_client_token()
            } else {
                req.client_token
            }),
        };
        let call = self.sessions.upstream().register_push(registration);
        let registration_id = within(deadline, call).await?;
        tracing::info!(contact_id = %record.contact_id, "push notifications registered");
        Ok(Response::new(pb::RegisterPushNotificationResponse {
            registration_id,
        }))
    }

    pub(super) async fn unregister_push_inner(
        &self,
        request: Request<pb::UnregisterPushNotificationRequest>,
    ) -> Result<Response<pb::UnregisterPushNotificationResponse>, Status> {
        let deadline = deadline(&request);
        let principal = Principal::of(&request);
        let req = request.into_inner();
        check_len("registration_id", &req.registration_id, 1, 256)?;
        let record = self
            .authorize(req.chat.as_ref(), &principal, Access::Act)
            .await?;
        let instance_id = self.instance_of(&record);
        let call = self.sessions.upstream().unregister_push(
            &instance_id,
            &record.contact_id,
            &req.registration_id,
        );
        within(deadline, call).await.map_err(|e| match e {
            ApiError::Upstream(UpstreamError::NotFound) => ApiError::not_found("registration_id"),
            other => other,
        })?;
        Ok(Response::new(pb::UnregisterPushNotificationResponse {}))
    }
}

/// Runs a Connect call within the caller's deadline, when it set one.
async fn within<T>(
    deadline: Option<std::time::Duration>,
    call: impl std::future::Future<Output = Result<T, UpstreamError>>,
) -> Result<T, ApiError> {
    match deadline {
        Some(d) => tokio::time::timeout(d, call)
            .await
            .map_err(|_| ApiError::DeadlineExceeded)?
            .map_err(ApiError::from),
        None => call.await.map_err(ApiError::from),
    }
}
