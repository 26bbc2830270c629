/* kubemq-kinesis-load: the included load tool (grows in the benchmark issue). */
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc > 1 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        printf("usage: kubemq-kinesis-load broker|kinesis|client [options]\n");
        return 0;
    }
    fprintf(stderr, "kubemq-kinesis-load: not yet available\n");
    return 2;
}
