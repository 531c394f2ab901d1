//! GetTranscript: a page of the chat's transcript, or of a contact a persistent chat
//! continues.

use super::*;

impl Gateway {
    pub(super) async fn get_transcript_inner(
        &self,
        request: Request<pb::GetTranscriptRequest>,
    ) -> Result<Response<pb::GetTranscriptResponse>, Status> {
        let deadline = deadline(&request);
        let principal = Principal::of(&request);
        let req = request.into_inner();
        let query = validate_transcript(&req)?;
        let session = self
            .live_session(req.chat.as_ref(), &principal, Access::Inspect)
            .await?;
        let upstream = self.sessions.upstream();
        // With a fresh token refused too, a past contact outside the chain is the reason.
        let past = query.contact_id.is_some();
        let page = self
            .with_token_or(
                &session,
                deadline,
                |t| {
                    let q = query.clone();
                    async move { upstream.get_transcript(&t, q).await }
                },
                || {
                    if past {
                        ApiError::NotInChain
                    } else {
                        UpstreamError::Unavailable.into()
                    }
                },
            )
            .await?;
        Ok(Response::new(pb::GetTranscriptResponse {
            events: page
                .items
                .into_iter()
                .map(crate::connect::item::into_event)
                .collect(),
            next_page_token: page.next_token.unwrap_or_default(),
        }))
    }
}
