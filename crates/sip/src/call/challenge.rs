//! Challenges (401/407) to our in-dialog requests (BYE, INFO, UPDATE, re-INVITE):
//! answered with the account's credentials, a bounded number of times per call.

use super::*;

impl Call {
    /// A final response to our BYE or INFO: a challenge is answered with credentials
    /// (RFC 3261 §22.2, a new CSeq in the dialog); anything else ends the request.
    pub(super) fn on_dialog_request_response(
        &mut self,
        key: &ClientKey,
        resp: &Response,
        config: &UaConfig,
        rng: &mut fastrand::Rng,
    ) {
        let sent = self
            .auth
            .requests
            .iter()
            .position(|r| branch_of(r).as_deref() == Some(key.branch.as_str()))
            .map(|i| self.auth.requests.remove(i));
        if !matches!(resp.status, 401 | 407) || self.auth.answered >= MAX_DIALOG_CHALLENGES {
            return;
        }
        let (Some(mut req), Some(d)) = (sent, self.dialog.as_mut()) else {
            return;
        };
        // a fresh branch and the next CSeq, the rest as it was
        let (fresh, target) = d.request(req.method.clone(), None, config, rng);
        for name in ["Via", "CSeq"] {
            if let Some(v) = fresh.headers.get(name) {
                req.headers.set(name, v);
            }
        }
        if self.authorize(&mut req, resp, rng) {
            self.send(req, target);
        }
    }

    /// Adds our answer to `resp`'s challenge to `req`. False when it cannot be answered.
    pub(super) fn authorize(&mut self, req: &mut Request, resp: &Response, rng: &mut fastrand::Rng) -> bool {
        let (challenge_header, answer_header) = if resp.status == 401 {
            ("WWW-Authenticate", "Authorization")
        } else {
            ("Proxy-Authenticate", "Proxy-Authorization")
        };
        let Ok(challenge) = Challenge::pick(resp.headers.get_all(challenge_header)) else {
            return false;
        };
        self.auth.answered += 1;
        self.auth.nc += 1;
        let creds = Credentials {
            username: self.account.auth_user.clone(),
            password: self.account.password.clone(),
        };
        let auth = Authorization::answer(
            &challenge,
            &creds,
            req.method.as_str(),
            &req.uri.to_string(),
            &random_token(rng, 16),
            self.auth.nc,
        );
        req.headers.remove("Authorization");
        req.headers.remove("Proxy-Authorization");
        req.headers.push(answer_header, auth.to_string());
        true
    }
}
