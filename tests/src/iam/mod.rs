//! IAM proven by evaluation: the AWS calls the functions really make, recorded on their way to
//! moto, judged by a real IAM policy evaluator against the policies template.yaml gives each
//! function's role (tests/tests/iam.rs).

pub mod evaluator;
pub mod recorder;
pub mod requests;
pub mod template;

pub use evaluator::{Decision, Policies, evaluate};
pub use recorder::{CallLog, RecordedCall, Recorder};
pub use requests::{Deployment, IamRequest};
pub use template::{Resolved, Stack};
