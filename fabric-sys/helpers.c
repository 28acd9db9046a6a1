#include "helpers.h"

enum fi_progress diaspora_fi_domain_attr_get_data_progress(const struct fi_domain_attr *attr)
{
	return attr->data_progress;
}

void diaspora_fi_domain_attr_set_data_progress(struct fi_domain_attr *attr, enum fi_progress p)
{
	attr->data_progress = p;
}
