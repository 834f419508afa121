// layer_check: an empty program linked with every object of one layer and only the layers
// below it (CMakeLists.txt, mtlsgw_layer). If the layer calls into a layer above, this
// does not link: the layering is held by the build, not by review.
int main(void) {
    return 0;
}
