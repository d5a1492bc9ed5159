/* The shared main() of every C unit-test executable. */
#define HD_TEST_IMPLEMENT
#include "hd_test.h"
#include "hadal/log.h"

int main(int argc, char **argv)
{
    hd_log_init("test", -1);
    return hd_test_main(argc, argv);
}
