//! authorization.k8s.io/v1 SelfSubjectAccessReview (`kubectl auth can-i`): not stored;
//! kubectl 1.33 sends it as protobuf.

use super::Strategy;

pub struct SelfSubjectAccessReview;

impl Strategy for SelfSubjectAccessReview {
    fn protobuf(&self) -> Option<&'static [super::Field]> {
        Some(super::super::protobuf::SELF_SUBJECT_ACCESS_REVIEW)
    }
}
