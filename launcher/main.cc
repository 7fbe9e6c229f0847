#include <cstdio>
int main() { std::puts("tributary: under construction"); return 0; }
