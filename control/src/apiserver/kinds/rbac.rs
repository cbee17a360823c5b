//! rbac.authorization.k8s.io/v1 Role, ClusterRole, RoleBinding, ClusterRoleBinding:
//! plain objects to the write path (escalation is judged in `authz/escalation.rs`);
//! kubectl 1.33 sends their creates as protobuf.

use super::{typed_as, Strategy};

pub struct Role;
pub struct ClusterRole;
pub struct RoleBinding;
pub struct ClusterRoleBinding;

impl Strategy for Role {
    typed_as!(k8s_openapi::api::rbac::v1::Role);

    fn protobuf(&self) -> Option<&'static [super::Field]> {
        Some(super::super::protobuf::ROLE)
    }
}

impl Strategy for ClusterRole {
    typed_as!(k8s_openapi::api::rbac::v1::ClusterRole);

    fn protobuf(&self) -> Option<&'static [super::Field]> {
        Some(super::super::protobuf::ROLE)
    }
}

impl Strategy for RoleBinding {
    typed_as!(k8s_openapi::api::rbac::v1::RoleBinding);

    fn protobuf(&self) -> Option<&'static [super::Field]> {
        Some(super::super::protobuf::ROLE_BINDING)
    }
}

impl Strategy for ClusterRoleBinding {
    typed_as!(k8s_openapi::api::rbac::v1::ClusterRoleBinding);

    fn protobuf(&self) -> Option<&'static [super::Field]> {
        Some(super::super::protobuf::ROLE_BINDING)
    }
}
