/* Accessors for fields whose C spelling is stable across libfabric versions but whose layout is
 * not (2.x moved fi_domain_attr.data_progress into an anonymous union with `progress`). C code
 * reaches the field by name in every version; Rust calls these. No policy. */
#ifndef DIASPORA_FABRIC_HELPERS_H
#define DIASPORA_FABRIC_HELPERS_H
#include <rdma/fabric.h>

enum fi_progress diaspora_fi_domain_attr_get_data_progress(const struct fi_domain_attr *attr);
void diaspora_fi_domain_attr_set_data_progress(struct fi_domain_attr *attr, enum fi_progress p);

#endif
