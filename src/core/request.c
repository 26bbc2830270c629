typedef int kk_placeholder_request_t;
