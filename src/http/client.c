/* placeholder: replaced by the module's implementation */
typedef int kk_placeholder_client_t;
