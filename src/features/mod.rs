//! Opt-in features beside the request path. Each is off unless the operator turns it on, and
//! the request path only calls into them through narrow hooks (the substitute stage records
//! what rotation and rollout need).

pub mod argocd_cm;
pub mod check;
pub mod rollout;
pub mod rotation;
