from modaverse import Client, GenerationOptions, TextDelta

with Client("localhost:50050") as client:  # tls=True, token="…" for a secured gateway
    drawn = client.chat("Draw a red circle.", generators={"image": GenerationOptions(steps=20)})
    print(drawn.text, drawn.save("outputs/"))  # the answer, and the paths of the generated files
    described = client.chat("What is in this image?", images=["outputs/0_image.png"])
    print(described.text, described.errors)  # a failed generator shows up in .errors
    for event in client.chat("Tell me about circles.", stream=True):  # typed events as they come
        if isinstance(event, TextDelta):
            print(event.text, end="", flush=True)
